"""Finding the weights inside the dicts that training scripts save.

torchvision's reference ``train.py`` saves ``{'model', 'optimizer', 'lr_scheduler', 'epoch', 'args'}``
and, with ``--model-ema``, ``'model_ema'`` (an ``AveragedModel`` state: ``module.``-prefixed names plus
``n_averaged``); timm's ``train.py`` saves ``{'epoch', 'arch', 'state_dict', 'optimizer', 'version',
'args', 'metric'}`` plus ``'state_dict_ema'``; mmengine saves ``{'meta', 'state_dict', 'message_hub',
'optimizer', 'param_schedulers'}`` and, with its EMAHook, ``'ema_state_dict'`` -- where the hook has
*swapped* the two before saving, so ``state_dict`` holds the averaged weights and ``ema_state_dict``
the raw ones (``module.``-prefixed, plus ``steps``).

`find_weights` picks the model's weights (or, with ``ema=True``, the EMA weights) by these rules and
says which entry it took; several candidates with no rule to choose between them is an error that
lists them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from resnet_port.checkpoints.untrusted import StandIn
from resnet_port.errors import CheckpointError

# Keys that hold the model's own weights, and keys that hold an exponential moving average of them.
MODEL_KEYS = ("state_dict", "model", "model_state_dict", "model_state", "net", "network", "module", "weights")
EMA_KEYS = ("model_ema", "state_dict_ema", "ema_state_dict", "model_ema_state_dict", "ema", "ema_model", "ema_state")
# Wrapper counters an averaged model stores beside its ``module.`` weights.
EMA_COUNTERS = ("n_averaged", "steps", "num_updates", "updates")
# Entries that hold tensors but never the model's weights.
NOT_WEIGHTS = ("optimizer", "optimizer_state_dict", "optim", "lr_scheduler", "scheduler", "scaler", "amp",
               "param_schedulers", "message_hub", "meta", "args", "loss_scaler")


@dataclass
class WeightsChoice:
    """Which entry of the file the weights came from, and by which rule."""

    key: str | None  # "model_ema", "state_dict/model", ... ; None for a bare state_dict
    container: str  # "state_dict", "torchvision train.py", "timm train.py", "mmengine", "training checkpoint"
    ema: bool
    rule: str
    training: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"weights_key": self.key, "container": self.container, "ema": self.ema, "rule": self.rule,
                **({"training": self.training} if self.training else {})}


def is_tensor_mapping(value: Any) -> bool:
    """A non-empty mapping of string names to tensors (a state_dict), ignoring a few non-tensor extras."""
    if not isinstance(value, Mapping) or not value:
        return False
    tensors = sum(isinstance(v, torch.Tensor) for v in value.values())
    return tensors > 0 and tensors >= len(value) // 2 and all(isinstance(k, str) for k in value)


def container_kind(payload: Mapping[str, Any]) -> str:
    """Which tool's layout the dict has (for the report; the rules below do not depend on it except mmengine's)."""
    keys = set(payload)
    if "message_hub" in keys:
        return "mmengine"
    if "meta" in keys and "state_dict" in keys and "arch" not in keys:
        return "mmcv/mmengine runner"
    if {"arch", "state_dict", "version"} <= keys:
        return "timm train.py"
    if {"model", "args"} <= keys and ("lr_scheduler" in keys or "optimizer" in keys or "epoch" in keys):
        return "torchvision train.py"
    return "training checkpoint"


def _training_facts(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A few plain facts worth reporting (epoch, arch, metric), never the recorded objects."""
    facts = {}
    for key in ("epoch", "arch", "metric", "version", "iter"):
        value = payload.get(key)
        if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
            value = value.item()
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            facts[key] = value
    meta = payload.get("meta")
    if isinstance(meta, Mapping):
        for key in ("epoch", "iter"):
            if isinstance(meta.get(key), int):
                facts[f"meta.{key}"] = meta[key]
    return facts


def _same_weights(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    if set(a) != set(b):
        return False
    for k, v in a.items():
        w = b[k]
        if isinstance(v, torch.Tensor) != isinstance(w, torch.Tensor):
            return False
        if isinstance(v, torch.Tensor) and (v.shape != w.shape or v.dtype != w.dtype or not torch.equal(v, w)):
            return False
    return True


def _strip_wrapper(state: Mapping[str, Any]) -> dict[str, Any]:
    """Drop an averaged model's counters and its ``module.`` prefix (torchvision's AveragedModel, mmengine's
    EMA); a plain ``module.`` prefix (DataParallel) is left to the name normaliser."""
    names = [k for k in state if k not in EMA_COUNTERS]
    if names and any(k in state for k in EMA_COUNTERS) and all(k.startswith("module.") for k in names):
        return {k[len("module."):]: state[k] for k in names}
    return dict(state)


def module_state_dict(obj: Any) -> dict[str, torch.Tensor] | None:
    """The state_dict of a whole pickled ``nn.Module`` (``torch.save(model)``), loaded as inert stand-ins,
    read from the attributes the pickle recorded (``_parameters``, persistent ``_buffers``, ``_modules``);
    None when ``obj`` is not such a module."""
    if not (isinstance(obj, StandIn) and isinstance(obj.state, dict) and "_parameters" in obj.state and "_modules" in obj.state):
        return None
    out: dict[str, torch.Tensor] = {}

    def walk(module: Any, prefix: str, depth: int) -> None:
        state = module.state if isinstance(module, StandIn) else None
        if not isinstance(state, dict) or depth > 64:
            return
        skip = state.get("_non_persistent_buffers_set")
        skip = skip if isinstance(skip, set) else set()
        for table, keep in (("_parameters", lambda n: True), ("_buffers", lambda n: n not in skip)):
            entries = state.get(table)
            if isinstance(entries, Mapping):
                for name, value in entries.items():
                    if isinstance(name, str) and isinstance(value, torch.Tensor) and keep(name):
                        out[prefix + name] = value.detach()
        children = state.get("_modules")
        if isinstance(children, Mapping):
            for name, child in children.items():
                if isinstance(name, str):
                    walk(child, f"{prefix}{name}.", depth + 1)

    walk(obj, "", 0)
    return out or None


def _unpickled_modules(payload: Any) -> tuple[Any, list[str]]:
    """``payload`` with whole pickled modules (at the top or under a key) replaced by their state_dicts."""
    found = []
    whole = module_state_dict(payload)
    if whole is not None:
        return whole, [payload.qualified_name]
    if isinstance(payload, Mapping):
        payload = dict(payload)
        for key, value in payload.items():
            state = module_state_dict(value)
            if state is not None:
                payload[key] = state
                found.append(f"{key}: {value.qualified_name}")
    return payload, found


def _candidates(payload: Mapping[str, Any], keys: tuple[str, ...], prefix: str = "", depth: int = 0) -> list[tuple[str, Mapping]]:
    """(key path, state_dict) for each of ``keys`` present, looking one wrapper deeper ({'model': {'state_dict': ...}})."""
    found = []
    for key in keys:
        value = payload.get(key)
        if is_tensor_mapping(value):
            found.append((prefix + key, value))
        elif isinstance(value, Mapping) and depth < 2:
            inner = _candidates(value, MODEL_KEYS, f"{prefix}{key}/", depth + 1)
            found.extend(inner)
    return found


def _dedupe(found: list[tuple[str, Mapping]]) -> list[tuple[str, Mapping]]:
    out: list[tuple[str, Mapping]] = []
    for key, state in found:
        if not any(_same_weights(state, other) for _, other in out):
            out.append((key, state))
    return out


def _ema_buffers(state: Mapping[str, Any]) -> dict[str, str]:
    """{parameter name: its ``ema_<name with dots as underscores>`` buffer}, as mmcv's EMAHook registers
    them inside the model; empty unless every ``ema_`` key is such a buffer of a key present."""
    flat = {f"ema_{k.replace('.', '_')}": k for k in state if not k.startswith("ema_")}
    emas = [k for k in state if k.startswith("ema_")]
    if not emas or any(k not in flat for k in emas):
        return {}
    return {flat[k]: k for k in emas}


def _split_ema_buffers(path: Path | str, state: dict[str, Any], choice: WeightsChoice, ema: bool
                       ) -> tuple[dict[str, Any], WeightsChoice]:
    """mmcv's EMAHook keeps the average as ``ema_*`` buffers and swaps them with the parameters before
    a checkpoint is saved: the parameters hold the averaged weights, the buffers the raw ones."""
    pairs = _ema_buffers(state)
    if not pairs:
        return state, choice
    out = {k: v for k, v in state.items() if not k.startswith("ema_")}
    if not ema:
        out.update({name: state[buffer] for name, buffer in pairs.items()})
    choice.rule += ("; mmcv's EMAHook swapped its ema_* buffers with the parameters before saving, so the "
                    + ("parameters hold the averaged weights" if ema else "ema_* buffers hold the raw weights"))
    choice.ema = ema
    return out, choice


def find_weights(path: Path | str, payload: Any, ema: bool = False) -> tuple[dict[str, Any], WeightsChoice]:
    """(state_dict, choice) of the model's weights in ``payload``; with ``ema`` the averaged ones."""
    try:
        state, choice = _find_weights(path, payload, ema)
    except _WantBuffers:  # --ema, and the averaged weights are the parameters themselves (mmcv's swap)
        state, choice = _find_weights(path, payload, False)
        return _split_ema_buffers(path, state, choice, True)
    if ema:
        return state, choice
    return _split_ema_buffers(path, state, choice, False)


class _WantBuffers(Exception):
    """--ema found no EMA entry, but the model weights may hold mmcv's ema_* buffers."""


def _find_weights(path: Path | str, payload: Any, ema: bool) -> tuple[dict[str, Any], WeightsChoice]:
    payload, modules = _unpickled_modules(payload)
    if not isinstance(payload, Mapping):
        kind = getattr(payload, "qualified_name", type(payload).__name__)
        raise CheckpointError(f"{path}: holds a {kind} object, not a state_dict or a dict holding one")
    kind = container_kind(payload)
    facts = _training_facts(payload)
    if modules:
        facts["pickled_modules"] = modules  # read from the recorded attributes; no module code ran
    ema_counters = any(k in payload for k in EMA_COUNTERS) and all(
        k.startswith("module.") for k in payload if k not in EMA_COUNTERS)
    if is_tensor_mapping(payload) and not _candidates(payload, MODEL_KEYS + EMA_KEYS):
        if ema and not ema_counters:
            if _ema_buffers(payload):
                raise _WantBuffers()
            raise CheckpointError(f"{path}: --ema given, but the file is a bare state_dict with no EMA weights")
        rule = "the file is an averaged model's state_dict" if ema_counters else "the file is a bare state_dict"
        return _strip_wrapper(payload), WeightsChoice(None, "state_dict", ema, rule, facts)

    if kind.startswith("mm") and is_tensor_mapping(payload.get("ema_state_dict")) and is_tensor_mapping(payload.get("state_dict")):
        # mmengine's EMAHook swaps the two before saving: 'state_dict' holds the averaged weights.
        key = "state_dict" if ema else "ema_state_dict"
        rule = ("mmengine's EMAHook saves the averaged weights under 'state_dict' and the raw ones under "
                "'ema_state_dict' (it swaps them before saving)")
        return _strip_wrapper(payload[key]), WeightsChoice(key, kind, ema, rule, facts)

    wanted = EMA_KEYS if ema else MODEL_KEYS
    found = _dedupe(_candidates(payload, wanted))
    what = "EMA weights" if ema else "model weights"
    if len(found) > 1:
        raise CheckpointError(
            f"{path}: several {what} candidates ({', '.join(k for k, _ in found)}) hold different weights "
            "and there is no rule to choose between them; extract the one you mean with torch"
        )
    if len(found) == 1:
        key, state = found[0]
        return _strip_wrapper(state), WeightsChoice(key, kind, ema, f"known {what} key {key!r}", facts)

    others = [(k, v) for k, v in payload.items()
              if isinstance(k, str) and k not in MODEL_KEYS + EMA_KEYS + NOT_WEIGHTS and is_tensor_mapping(v)]
    others = _dedupe(others)
    holds = ", ".join(repr(k) for k in list(payload)[:20])
    if ema:
        main = _dedupe(_candidates(payload, MODEL_KEYS))
        if len(main) == 1 and _ema_buffers(main[0][1]):
            raise _WantBuffers()
        raise CheckpointError(f"{path}: --ema given, but the file holds no EMA weights (looked for "
                              f"{', '.join(EMA_KEYS)}; it holds {holds})")
    ema_found = _dedupe(_candidates(payload, EMA_KEYS))
    if ema_found and not others:
        raise CheckpointError(f"{path}: holds only EMA weights ({', '.join(k for k, _ in ema_found)}); pass --ema to use them")
    if len(others) == 1:
        key, state = others[0]
        return _strip_wrapper(state), WeightsChoice(key, kind, ema, f"the only state_dict in the file, under {key!r}", facts)
    if others:
        raise CheckpointError(
            f"{path}: several state_dict candidates ({', '.join(k for k, _ in others)}) and no rule to choose "
            "between them; extract the one you mean with torch"
        )
    raise CheckpointError(f"{path}: holds no state_dict (expected a mapping of names to tensors; it holds {holds})")
