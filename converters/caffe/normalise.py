"""A pre-pass that hands the graph recogniser one clean TEST net in BVLC's own vocabulary.

Files people actually have come from Caffe forks and from training: the graph recogniser
(graph.py) should not have to know any of that.  This pass, run before it, rewrites the net and its
blobs (never in place) and says what it did:

- **Phase**: only the TEST net's layers remain (``include``/``exclude`` rules), as Caffe builds it.
- **Training heads**: loss and Accuracy layers (whatever they read: the logits, the Softmax output,
  a ``label`` blob that nothing in a deploy file makes), Python layers at the end of the net and
  Silence layers are dropped, each with a note.
- **Input**: a bottomless Python layer or a fork's ``*Data`` layer becomes the net's Input.
- **Output activation**: a Sigmoid (multi-label heads) that ends the net is dropped with a note;
  the converted model gives logits, as it does for Softmax nets.
- **Flatten / Reshape before the classifier**: the identity for an InnerProduct of axis 1, which
  flattens its input itself; dropped and the classifier rewired.
- **Pooling rounding**: the forks' ``ceil_mode`` (bool) becomes BVLC's ``round_mode``.  In a binary
  file both are field 13 with opposite meanings; ``pool_reading`` says which one the caffemodel's
  own values are read as (the prototxt decides when given, see `pool_reading_of`).
- **NVIDIA Caffe BatchNorm** (``scale_bias``, 5 blobs ``[mean, var, var_correction, scale, bias]``):
  NVIDIA Caffe's forward (src/caffe/layers/batch_norm_layer.cpp) normalises with blobs 0 and 1 as
  they are (no division by blob 2) with ``eps = max(eps, 1e-5)``, then multiplies by blob 3 and adds
  blob 4.  Split into BVLC's BatchNorm (factor 1) + Scale (bias_term), which compute the same.
- **Segmentation forks' BN** (``type: "BN"``, ``bn_param``): 4 blobs ``[scale, shift, mean, var]``
  (yjxiong/caffe, PSPNet: ``scale * (x - mean) / sqrt(var + eps) + shift`` at TEST), or SegNet's 2
  blobs ``[scale, shift]`` with ``bn_mode: INFERENCE`` (statistics folded in: ``scale * x + shift``).
  Split into BatchNorm + Scale as well.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from resnet_port.converters.caffe.errors import CaffeFormatError
from resnet_port.converters.caffe.netstate import DATA_TYPES, LOSS_TYPES, in_test_phase
from resnet_port.converters.caffe.schema import message_class
from resnet_port.errors import ConversionError

NVIDIA_MIN_EPS = 1e-5  # NVIDIA Caffe's BatchNorm: eps_ = max(eps, 0.00001f)
FORK_BN_EPS = 1e-5  # yjxiong/caffe BNParameter.eps default
HSZHAO_VAR_EPS = 1e-10  # hszhao/PSPNet BNParameter.var_eps default

# Net-level and layer-level fields of NVIDIA Caffe that only choose precision, memory or
# algorithms: read, ignored, listed in a note.
NVIDIA_NET_FIELDS = (
    "default_forward_type", "default_backward_type", "default_forward_math", "default_backward_math",
    "global_grad_scale", "global_grad_scale_adaptive", "default_conv_algos_override", "reduce_buckets",
    "default_cudnn_math_override", "eltwise_mem_sharing",
)
NVIDIA_LAYER_FIELDS = ("forward_type", "backward_type", "forward_math", "backward_math", "debug", "cudnn_math_override")
_IGNORED_PARAM_FIELDS = {  # (training-only fields such as fillers and use_global_stats are not listed)
    "convolution_param": ("engine", "cudnn_convolution_algo_seeker", "conv_algos_override"),
    "batch_norm_param": ("engine",),
    "pooling_param": ("engine",),
    "relu_param": ("engine",),
    "bn_param": ("engine",),
}


@dataclass
class Normalised:
    """The cleaned net (TEST phase, BVLC vocabulary), its blobs by layer name, and what was done."""

    net: Any
    blobs: dict[str, list[np.ndarray]]
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    # New layer name -> (source layer, source blob indices), for split layers (report sources).
    blob_origin: dict[str, tuple[str, tuple[int, ...]]] = field(default_factory=dict)


def pool_reading_of(prototxt_net: Any | None) -> tuple[str, str]:
    """How field 13 of a binary caffemodel's pooling layers is read, and why.

    ``"bvlc"``: ``round_mode`` (0 = CEIL, 1 = FLOOR); ``"fork"``: ``ceil_mode`` (1 = true = CEIL).
    """
    if prototxt_net is not None:
        layers = list(prototxt_net.layer)
        if any(l.type == "Pooling" and l.pooling_param.HasField("ceil_mode") for l in layers):
            return "fork", "the prototxt writes ceil_mode (the forks' bool field 13)"
        if any(l.type == "Pooling" and l.pooling_param.HasField("round_mode") for l in layers):
            return "bvlc", "the prototxt writes round_mode (BVLC's enum field 13)"
        return "bvlc", "the prototxt sets neither ceil_mode nor round_mode; its pooling (rounded up) is used"
    return "bvlc", "no prototxt was given: BVLC's round_mode (0 = CEIL, 1 = FLOOR); give --prototxt for a ceil_mode fork's file"


def pool_ceil(p: Any, reading: str = "bvlc") -> bool:
    """True when Caffe rounds this pooling layer's output size up."""
    if p.HasField("ceil_mode"):
        return bool(p.ceil_mode)
    if p.HasField("round_mode"):
        return bool(p.round_mode) if reading == "fork" else p.round_mode == 0
    return True  # both BVLC and the forks default to rounding up


def _is_data(layer: Any) -> bool:
    return not layer.bottom and (layer.type in DATA_TYPES or layer.type == "Python" or layer.type.endswith("Data"))


def _is_head(layer: Any) -> bool:
    return layer.type in LOSS_TYPES or layer.type.endswith("Loss") or layer.type == "Accuracy"


def _clone(layer: Any) -> Any:
    copy = message_class("LayerParameter")()
    copy.CopyFrom(layer)
    return copy


def _flat(array: np.ndarray, channels: int | None, what: str, where: str) -> np.ndarray:
    flat = np.asarray(array).reshape(-1)
    if channels is not None and flat.size != channels:
        raise ConversionError(f"{where}: {what} has {flat.size} values ({list(np.shape(array))}), expected {channels}")
    return flat


def _consumers(layers: Sequence[Any], index: int, blob: str) -> list[int]:
    """Indices of the layers after ``index`` that read ``blob`` as made by layer ``index``."""
    out = []
    for j in range(index + 1, len(layers)):
        if blob in layers[j].bottom:
            out.append(j)
        if blob in layers[j].top:
            break
    return out


def ignored_fields(net: Any) -> list[str]:
    """Fields set in ``net`` that cannot change inference and are ignored (NVIDIA precision, engines),
    one entry per field with the layers that set it."""
    found = [f"net {name}" for name in NVIDIA_NET_FIELDS if net.HasField(name)]
    by_field: dict[str, list[str]] = {}
    for layer in net.layer:
        names = [name for name in NVIDIA_LAYER_FIELDS if layer.HasField(name)]
        for param, fields in _IGNORED_PARAM_FIELDS.items():
            if layer.HasField(param):
                msg = getattr(layer, param)
                names += [f"{param}.{name}" for name in fields if msg.HasField(name)]
        for name in names:
            by_field.setdefault(name, []).append(layer.name)
    for name, layers in by_field.items():
        shown = ", ".join(layers[:3]) + (f", ... ({len(layers)} layers)" if len(layers) > 3 else "")
        found.append(f"{name} ({shown})")
    return found


def is_nvidia(net: Any) -> bool:
    if any(net.HasField(name) for name in NVIDIA_NET_FIELDS):
        return True
    for layer in net.layer:
        if any(layer.HasField(name) for name in NVIDIA_LAYER_FIELDS):
            return True
        if layer.type == "BatchNorm" and (
            layer.batch_norm_param.HasField("scale_bias") or layer.batch_norm_param.HasField("scale_filler")
            or layer.batch_norm_param.HasField("bias_filler") or layer.batch_norm_param.HasField("engine")
        ):
            return True
    return False


def normalise(
    net: Any,
    blobs: Mapping[str, Sequence[np.ndarray]],
    where: str,
    filter_phase: bool = True,
    pool_reading: str = "bvlc",
    nvidia: bool | None = None,
) -> Normalised:
    """The cleaned copy of ``net`` and ``blobs`` (see the module docstring)."""
    try:
        return _normalise(net, blobs, where, filter_phase, pool_reading, nvidia)
    except UnicodeDecodeError as exc:  # a damaged file: a name or type that is not text
        raise CaffeFormatError(f"{where}: a layer's name, type or blob name is not UTF-8 text (a damaged file): {exc.reason}") from None


def _normalise(
    net: Any, blobs: Mapping[str, Sequence[np.ndarray]], where: str, filter_phase: bool, pool_reading: str, nvidia: bool | None
) -> Normalised:
    for i, layer in enumerate(net.layer):
        texts = [layer.name, layer.type, *layer.bottom, *layer.top]
        if not all(isinstance(t, str) for t in texts):  # protobuf hands back bytes that are not UTF-8
            raise CaffeFormatError(f"{where}: layer #{i}: its name, type or a blob name is not UTF-8 text (a damaged file)")
    out = Normalised(message_class("NetParameter")(), {k: list(v) for k, v in blobs.items()})
    out.net.name = net.name if isinstance(net.name, str) else ""
    nvidia = is_nvidia(net) if nvidia is None else nvidia
    layers = []
    for layer in net.layer:
        if filter_phase and not in_test_phase(layer):
            out.details.setdefault("excluded_from_test", []).append(layer.name)
            continue
        layers.append(_clone(layer))

    ignored = ignored_fields(net)
    if ignored:
        out.notes.append("ignored (no effect on inference): " + "; ".join(ignored))

    # 1. Training heads, Silence; Python layers at the end of the net.
    kept: list[Any] = []
    for i, layer in enumerate(layers):
        if _is_head(layer):
            made = {t for l in kept for t in l.top}
            missing = [b for b in layer.bottom if b not in made]
            why = f"reads {', '.join(repr(b) for b in missing)}, which nothing makes" if missing else "a training head"
            out.notes.append(f"{layer.name} ({layer.type}): {why}; dropped (not part of the model)")
            continue
        if layer.type == "Silence":
            out.notes.append(f"{layer.name} (Silence): no output; dropped")
            continue
        if layer.type == "Python" and layer.bottom:
            later = [t for t in layer.top if any(t in l.bottom for l in layers[i + 1 :] if not _is_head(l))]
            if later:
                raise ConversionError(
                    f"{where}: layer {layer.name!r} (Python {layer.python_param.module}.{layer.python_param.layer}) computes "
                    f"{later[0]!r} in Python code, which cannot be converted"
                )
            out.notes.append(f"{layer.name} (Python {layer.python_param.layer}): a training head in Python; dropped")
            continue
        kept.append(layer)
    layers = kept

    # 2. Inputs from Python / fork data layers.
    for layer in layers:
        if _is_data(layer) and layer.type not in DATA_TYPES:
            what = f"Python {layer.python_param.module}.{layer.python_param.layer}" if layer.type == "Python" else layer.type
            crop = int(layer.transform_param.crop_size) if layer.HasField("transform_param") else 0
            layer.type = "Input"
            layer.ClearField("python_param")
            if crop:
                layer.input_param.shape.add().dim.extend([1, 3, crop, crop])
            out.notes.append(f"{layer.name} ({what}): a data layer; its first top {layer.top[0]!r} is the input")

    # 3. Sigmoid / Flatten / Reshape around the classifier.
    i = 0
    while i < len(layers):
        layer = layers[i]
        if layer.type == "Sigmoid" and len(layer.bottom) == 1:
            users = _consumers(layers, i, layer.top[0])
            if not users:
                out.notes.append(
                    f"{layer.name} (Sigmoid): the net's output activation (multi-label head); dropped: the model gives "
                    "logits, apply a sigmoid to them"
                )
                out.details["output_activation"] = "sigmoid"
                del layers[i]
                continue
        if layer.type in ("Flatten", "Reshape") and len(layer.bottom) == 1 and layer.top[0] != layer.bottom[0]:
            users = _consumers(layers, i, layer.top[0])
            flattens = _flattens_from_axis_1(layer)
            if users and flattens and all(layers[j].type == "InnerProduct" and layers[j].inner_product_param.axis == 1 for j in users):
                for j in users:
                    bottoms = [layer.bottom[0] if b == layer.top[0] else b for b in layers[j].bottom]
                    del layers[j].bottom[:]
                    layers[j].bottom.extend(bottoms)
                names = ", ".join(repr(layers[j].name) for j in users)
                out.notes.append(f"{layer.name} ({layer.type}): flattens before the classifier {names}, which flattens its input itself; dropped")
                del layers[i]
                continue
        if layer.type == "Softmax" and not _consumers(layers, i, layer.top[0]):
            out.details.setdefault("output_activation", "softmax")
        i += 1

    # 4. Pooling: the forks' ceil_mode, and field 13 of binary files read as decided.
    for layer in layers:
        if layer.type != "Pooling":
            continue
        p = layer.pooling_param
        ceil = pool_ceil(p, pool_reading)
        if p.HasField("ceil_mode") or (p.HasField("round_mode") and pool_reading == "fork"):
            p.ClearField("ceil_mode")
            p.round_mode = 0 if ceil else 1
        if p.HasField("torch_pooling") and p.torch_pooling:
            out.warnings.append(
                f"{layer.name}: torch_pooling is set; NVIDIA Caffe's own pooling layers never read it (sizes are rounded "
                f"{'up' if ceil else 'down'} as the layer says), and so does this converter"
            )

    # 5. BatchNorm of NVIDIA Caffe and the forks' BN: BVLC BatchNorm (+ Scale).
    result: list[Any] = []
    for layer in layers:
        if layer.type == "BatchNorm":
            result.extend(_nvidia_batch_norm(layer, out, where, nvidia))
        elif layer.type == "BN":
            result.extend(_fork_bn(layer, out, where))
        else:
            result.append(layer)
    out.net.layer.extend(result)
    return out


def _flattens_from_axis_1(layer: Any) -> bool:
    if layer.type == "Flatten":
        p = layer.flatten_param
        return p.axis == 1 and p.end_axis == -1
    p = layer.reshape_param
    dims = list(p.shape.dim)
    return p.axis == 0 and p.num_axes == -1 and len(dims) == 2 and dims[0] in (0, -1) and (dims[1] == -1 or dims[1] > 0) and dims != [-1, -1]


def _scale_layer(name: str, source: Any) -> Any:
    scale = message_class("LayerParameter")(name=name, type="Scale")
    scale.bottom.append(source.top[0])
    scale.top.append(source.top[0])
    scale.scale_param.bias_term = True
    return scale


def _nvidia_batch_norm(layer: Any, out: Normalised, where: str, nvidia: bool) -> list[Any]:
    blobs = out.blobs.get(layer.name)
    p = layer.batch_norm_param
    declared = p.scale_bias or p.HasField("scale_filler") or p.HasField("bias_filler")
    if blobs is None:
        return [layer]  # a missing layer: reported where the weights are paired
    if declared and len(blobs) != 5:
        raise ConversionError(
            f"{where}: BatchNorm {layer.name!r} sets scale_bias (NVIDIA Caffe) but has {len(blobs)} blobs; expected 5 "
            "(mean, variance, variance correction, scale, bias)"
        )
    if len(blobs) not in (3, 5):
        return [layer]  # layers.py names the wrong count
    if len(blobs) == 3 and not nvidia:
        return [layer]
    channels = np.asarray(blobs[0]).size
    mean = _flat(blobs[0], channels, f"BatchNorm {layer.name!r} mean blob", where)
    var = _flat(blobs[1], channels, f"BatchNorm {layer.name!r} variance blob", where)
    eps = max(float(np.float32(p.eps)), NVIDIA_MIN_EPS)
    correction = float(np.asarray(blobs[2]).reshape(-1)[0]) if np.asarray(blobs[2]).size else 1.0
    bn = _clone(layer)
    bn.batch_norm_param.ClearField("scale_bias")
    bn.batch_norm_param.ClearField("scale_filler")
    bn.batch_norm_param.ClearField("bias_filler")
    bn.batch_norm_param.eps = eps
    out.blobs[layer.name] = [mean, var, np.ones(1, np.float32)]
    what = "NVIDIA Caffe BatchNorm"
    if correction != 1.0:
        out.notes.append(f"{layer.name}: blob 2 (variance correction) is {correction:g}; NVIDIA Caffe's forward does not use it")
    if p.eps < NVIDIA_MIN_EPS:
        out.notes.append(f"{layer.name}: eps {p.eps:g} raised to {NVIDIA_MIN_EPS:g}, as NVIDIA Caffe does")
    if len(blobs) == 3:
        out.notes.append(f"{layer.name} ({what}): mean and variance used as stored (NVIDIA Caffe does not divide by blob 2)")
        return [bn]
    scale_name = f"{layer.name}/scale_bias"
    out.blobs[scale_name] = [_flat(blobs[3], channels, f"{layer.name!r} scale blob 3", where), _flat(blobs[4], channels, f"{layer.name!r} bias blob 4", where)]
    out.blob_origin[layer.name] = (layer.name, (0, 1, 2))
    out.blob_origin[scale_name] = (layer.name, (3, 4))
    out.notes.append(
        f"{layer.name} ({what}, scale_bias): blobs 0, 1 -> mean, variance (eps {eps:g}); blobs 3, 4 -> gamma, beta "
        f"(as Scale {scale_name!r})"
    )
    return [bn, _scale_layer(scale_name, layer)]


def _fork_bn(layer: Any, out: Normalised, where: str) -> list[Any]:
    blobs = out.blobs.get(layer.name)
    if blobs is None:
        raise ConversionError(f"{where}: BN layer {layer.name!r} has no weights in the caffemodel: missing layer")
    p = layer.bn_param
    bn = message_class("LayerParameter")(name=layer.name, type="BatchNorm")
    bn.bottom.extend(layer.bottom)
    bn.top.extend(layer.top)
    scale_name = f"{layer.name}/scale_shift"
    if len(blobs) == 4:
        channels = np.asarray(blobs[0]).size
        hszhao = any(p.HasField(f) for f in ("var_eps", "moving_average", "decay", "scale_filler", "shift_filler")) and not (
            p.HasField("eps") or p.HasField("frozen")
        )
        if hszhao and not p.moving_average:
            raise ConversionError(
                f"{where}: BN layer {layer.name!r} has moving_average false: it normalises with the statistics of each "
                "batch at test time, which no fixed model reproduces"
            )
        eps = float(np.float32(p.var_eps)) if hszhao else float(np.float32(p.eps))
        out.blobs[layer.name] = [
            _flat(blobs[2], channels, f"BN {layer.name!r} mean blob 2", where),
            _flat(blobs[3], channels, f"BN {layer.name!r} variance blob 3", where),
            np.ones(1, np.float32),
        ]
        out.blob_origin[layer.name] = (layer.name, (2, 3))
        out.notes.append(
            f"{layer.name} (BN, bn_param): blobs [scale, shift, mean, variance]; scale * (x - mean) / sqrt(var + {eps:g}) + shift"
        )
    elif len(blobs) == 2:
        channels = np.asarray(blobs[0]).size
        if p.bn_mode != 1:
            raise ConversionError(
                f"{where}: BN layer {layer.name!r} (2 blobs) has bn_mode LEARN: it normalises with each batch's statistics at "
                "test time; fold them in first (SegNet's compute_bn_statistics.py writes bn_mode: INFERENCE)"
            )
        eps = FORK_BN_EPS
        out.blobs[layer.name] = [np.zeros(channels, np.float32), np.full(channels, 1.0 - eps, np.float32), np.ones(1, np.float32)]
        out.blob_origin[layer.name] = (layer.name, ())
        out.notes.append(
            f"{layer.name} (BN, bn_mode INFERENCE): statistics folded into [scale, shift]: y = scale * x + shift "
            "(as a BatchNorm of mean 0, variance 1 - eps, within float32 rounding)"
        )
    else:
        raise ConversionError(f"{where}: BN layer {layer.name!r} has {len(blobs)} blobs, expected 4 (scale, shift, mean, variance) or 2")
    bn.batch_norm_param.eps = eps
    out.blobs[scale_name] = [
        _flat(blobs[0], channels, f"BN {layer.name!r} scale blob 0", where),
        _flat(blobs[1], channels, f"BN {layer.name!r} shift blob 1", where),
    ]
    out.blob_origin[scale_name] = (layer.name, (0, 1))
    return [bn, _scale_layer(scale_name, layer)]


__all__ = ["Normalised", "ignored_fields", "is_nvidia", "normalise", "pool_ceil", "pool_reading_of"]
