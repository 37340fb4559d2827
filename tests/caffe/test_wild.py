"""Issue 17: the Caffe ResNets people actually have.

Every test writes its own small net in the forms that training runs, Caffe forks and converters
write (tests/caffe/wildnets.py), converts it, and compares the converted model with a float64
forward computed apart from the converter: the interpreter on the BVLC net the test itself says
is equivalent, or torch.nn.functional written here.  Each reading handled wrongly (a blob order,
a rounding, an eps) is shown to move the numbers.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from resnet_port.checkpoints import load_checkpoint
from resnet_port.converters.caffe import CaffeInterpreter, convert_caffe, parse_prototxt, write_caffemodel, write_caffemodel_h5
from resnet_port.converters.caffe.cli import main
from resnet_port.converters.common import run_converted
from resnet_port.errors import ConversionError
from tests.caffe.netgen import BN_FACTOR, resnet_prototxt, weights_for
from tests.caffe.wildnets import logits, rel, seeded, train_snapshot_text

TOL = 1e-5


def cli(argv, capsys):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def deploy():
    text = resnet_prototxt()
    net = parse_prototxt(text)
    return text, weights_for(net, seed=3)


# -- 1. A training snapshot with a deploy prototxt ---------------------------------------------


def test_training_snapshot_with_deploy_prototxt_converts_without_warnings(deploy, tmp_path):
    text, blobs = deploy
    (tmp_path / "deploy.prototxt").write_text(text)
    train = parse_prototxt(train_snapshot_text(text))
    snapshot = write_caffemodel(tmp_path / "snapshot_iter_500.caffemodel", train, blobs)
    conversion = convert_caffe(snapshot, prototxt=tmp_path / "deploy.prototxt", verify=True)
    assert conversion.report.warnings == []
    x = seeded((2, 3, 64, 64))
    assert rel(logits(text, blobs, x), run_converted(conversion, x)) < TOL
    assert conversion.metadata.verification["max_rel_diff"] < TOL
    # The snapshot's TRAIN data layer says what the net takes: the mean values (BGR).
    assert conversion.metadata.preprocessing.mean == (104.0, 117.0, 123.0)


def test_inference_changing_difference_is_a_warning_and_the_prototxt_wins(deploy, tmp_path, capsys):
    text, blobs = deploy
    (tmp_path / "deploy.prototxt").write_text(text)
    train = parse_prototxt(train_snapshot_text(text, eps_at={"bn2a_branch2b": 0.001}))
    snapshot = write_caffemodel(tmp_path / "snap.caffemodel", train, blobs)
    out = tmp_path / "o.pth"
    code, stdout, _ = cli([snapshot, "--prototxt", tmp_path / "deploy.prototxt", "-o", out, "--json"], capsys)
    assert code == 0
    warnings = json.loads(stdout)["warnings"]
    assert len(warnings) == 1 and "bn2a_branch2b" in warnings[0] and "eps" in warnings[0] and "0.001" in warnings[0]
    spec, _, _ = load_checkpoint(out)
    assert spec.bn_eps == 1e-5 and not spec.bn_eps_overrides  # the prototxt's (default) eps


def test_blob_shape_disagreement_names_the_layer_and_both_shapes(deploy, tmp_path, capsys):
    text, blobs = deploy
    (tmp_path / "deploy.prototxt").write_text(text)
    wider = text.replace('top: "fc" inner_product_param { num_output: 10 }', 'top: "fc" inner_product_param { num_output: 12 }')
    trained = dict(blobs)
    trained["fc"] = [np.zeros((12, blobs["fc"][0].shape[1]), np.float32), np.zeros(12, np.float32)]
    snapshot = write_caffemodel(tmp_path / "ft.caffemodel", parse_prototxt(wider), trained)
    out = tmp_path / "o.pth"
    code, _, err = cli([snapshot, "--prototxt", tmp_path / "deploy.prototxt", "-o", out], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "'fc'" in err and "[12, 128]" in err and "[10, 128]" in err
    assert not out.exists()


# -- 2. Forks ----------------------------------------------------------------------------------


def _fork_pool(text: str) -> str:
    """pool1 as the PyTorch-to-Caffe converters write it: pad 1, ceil_mode false."""
    return text.replace("pooling_param { kernel_size: 3 stride: 2 pool: MAX }", "pooling_param { kernel_size: 3 stride: 2 pad: 1 pool: MAX ceil_mode: false }")


def test_ceil_mode_fork_prototxt_and_binary(deploy, tmp_path):
    text, blobs = deploy
    fork = _fork_pool(text)
    (tmp_path / "fork.prototxt").write_text(fork)
    bvlc_meaning = fork.replace("ceil_mode: false", "round_mode: FLOOR")  # what the fork's field means
    # The fork's binary file: field 13 holds its bool (false = 0), which BVLC would read as CEIL.
    binary_net = parse_prototxt(fork.replace("ceil_mode: false", "round_mode: CEIL"))
    model = write_caffemodel(tmp_path / "fork.caffemodel", binary_net, blobs)
    conversion = convert_caffe(model, prototxt=tmp_path / "fork.prototxt")
    assert conversion.spec.stem_pool == "max"
    assert conversion.report.warnings == []  # read as ceil_mode: both say floor
    assert conversion.metadata.source.details["pool_reading"]["field_13"] == "ceil_mode"
    x = seeded((2, 3, 64, 64), 1)
    right = logits(bvlc_meaning, blobs, x)
    assert rel(right, run_converted(conversion, x)) < TOL
    # Read the BVLC way, the same bytes round up: a 17x17 pool1 where the fork makes 16x16.
    wrong = CaffeInterpreter(binary_net, blobs).forward({"data": x}, until="pool1")["pool1"]
    kept = CaffeInterpreter(parse_prototxt(bvlc_meaning), blobs).forward({"data": x}, until="pool1")["pool1"]
    assert tuple(kept.shape[-2:]) == (16, 16) and tuple(wrong.shape[-2:]) == (17, 17)
    # Without the prototxt the caffemodel is read as BVLC's, and the report says so.
    alone = write_caffemodel(tmp_path / "bvlc.caffemodel", parse_prototxt(bvlc_meaning), blobs)
    details = convert_caffe(alone).metadata.source.details["pool_reading"]
    assert details["field_13"] == "round_mode" and "no prototxt" in details["why"]


def _nvidia(text: str) -> str:
    """NVIDIA Caffe's form: every BatchNorm carries its scale and bias; net-level precision fields."""
    text = re.sub(r'layer \{ name: "scale[^"]*" type: "Scale"[^\n]*\n', "", text)
    text = text.replace("batch_norm_param { use_global_stats: true  }", "batch_norm_param { scale_bias: true eps: 1e-6 engine: CUDNN }")
    text = text.replace('type: "Convolution"', 'type: "Convolution" forward_type: FLOAT16 forward_math: FLOAT')
    return text.replace('name: "tiny"\n', 'name: "tiny"\ndefault_forward_type: FLOAT16\ndefault_backward_type: FLOAT16\neltwise_mem_sharing: true\n')


def test_nvidia_batchnorm_scale_bias(deploy, tmp_path):
    text, blobs = deploy
    nv_text = _nvidia(text)
    assert "scale_bias: true" in nv_text and '"Scale"' not in nv_text
    nv_blobs = {}
    for name, arrays in blobs.items():
        if name.startswith("scale"):
            continue
        if name.startswith("bn"):
            scale = blobs["scale" + name[2:]]
            # NVIDIA Caffe: [mean, variance, correction, scale, bias], statistics stored as they are.
            nv_blobs[name] = [arrays[0] / BN_FACTOR, arrays[1] / BN_FACTOR, np.array([0.5], np.float32), scale[0], scale[1]]
        else:
            nv_blobs[name] = arrays
    (tmp_path / "nv.prototxt").write_text(nv_text)
    model = write_caffemodel(tmp_path / "nv.caffemodel", parse_prototxt(nv_text), nv_blobs)
    for prototxt in (None, tmp_path / "nv.prototxt"):
        conversion = convert_caffe(model, prototxt=prototxt, verify=True)
        notes = " ".join(conversion.report.notes)
        assert "default_forward_type" in notes and "forward_type" in notes and "eltwise_mem_sharing" in notes
        x = seeded((2, 3, 64, 64), 2)
        # Independent: NVIDIA Caffe's BatchNorm forward (batch_norm_layer.cpp) in torch.nn.functional, as the
        # BVLC net the test writes: BatchNorm(blob0, blob1, factor 1, eps max(1e-6, 1e-5)) + Scale(blob3, blob4).
        bvlc_text = text.replace("use_global_stats: true  }", "use_global_stats: true eps: 1e-5 }")
        reference = logits(bvlc_text, {k: v for k, v in blobs.items()}, x)
        assert rel(reference, run_converted(conversion, x)) < TOL
    # One layer by hand: conv1 -> bn_conv1 of NVIDIA Caffe, against the converted stem.
    conv = F.conv2d(torch.from_numpy(x).double(), torch.from_numpy(nv_blobs["conv1"][0]).double(), torch.from_numpy(nv_blobs["conv1"][1]).double(), 2, 3)
    b = [torch.from_numpy(np.asarray(a, np.float64)).reshape(1, -1, 1, 1) for a in nv_blobs["bn_conv1"][:2] + nv_blobs["bn_conv1"][3:]]
    expected = (conv - b[0]) / torch.sqrt(b[1] + 1e-5) * b[2] + b[3]
    model_ = _built(conversion)
    with torch.inference_mode():
        ours = model_.bn1(model_.conv1(torch.from_numpy(x))).double()
    assert rel(expected.numpy(), ours.numpy()) < TOL
    # Read the BVLC way (divide by blob 2 = 0.5, eps 1e-6) the numbers move.
    wrong = (conv - 2 * b[0]) / torch.sqrt(2 * b[1] + 1e-6) * b[2] + b[3]
    assert rel(expected.numpy(), wrong.numpy()) > 1e-3


def _built(conversion):
    from resnet_port.resnet_ref import build_model

    model = build_model(conversion.spec)
    full = model.state_dict()
    full.update(conversion.state_dict)
    model.load_state_dict(full)
    return model.eval()


def _fork_bn(text: str, segnet: bool = False) -> str:
    text = re.sub(r'layer \{ name: "scale[^"]*" type: "Scale"[^\n]*\n', "", text)
    param = "bn_param { bn_mode: INFERENCE scale_filler { type: \"constant\" value: 1 } shift_filler { value: 0 } }" if segnet else (
        'bn_param { slope_filler { type: "constant" value: 1 } bias_filler { type: "constant" value: 0 } frozen: true momentum: 0.95 }'
    )
    return text.replace('type: "BatchNorm"', 'type: "BN" param { lr_mult: 1 } param { lr_mult: 1 } param { lr_mult: 0 } param { lr_mult: 0 }').replace(
        "batch_norm_param { use_global_stats: true  }", param
    )


def test_segmentation_fork_bn_layer(deploy, tmp_path):
    text, blobs = deploy
    fork_text = _fork_bn(text)
    fork_blobs = {}
    for name, arrays in blobs.items():
        if name.startswith("scale"):
            continue
        if name.startswith("bn"):
            scale = blobs["scale" + name[2:]]
            c = scale[0].size
            shaped = [a.reshape(1, c, 1, 1) for a in (scale[0], scale[1], arrays[0] / BN_FACTOR, arrays[1] / BN_FACTOR)]
            fork_blobs[name] = shaped  # [scale, shift, mean, variance], (1, C, 1, 1) as the fork stores them
        else:
            fork_blobs[name] = arrays
    (tmp_path / "bn.prototxt").write_text(fork_text)
    h5 = write_caffemodel_h5(tmp_path / "bn.caffemodel.h5", fork_blobs)
    conversion = convert_caffe(h5, prototxt=tmp_path / "bn.prototxt", verify=True)
    x = seeded((2, 3, 64, 64), 4)
    reference = logits(text, blobs, x)  # the same numbers in BVLC's BatchNorm + Scale
    assert rel(reference, run_converted(conversion, x)) < TOL
    assert conversion.metadata.verification["max_rel_diff"] < TOL
    # The blob order matters: statistics taken from blobs 0, 1 (BVLC's place) give other numbers.
    swapped = {k: ([v[2], v[3], v[0], v[1]] if k.startswith("bn") else v) for k, v in fork_blobs.items()}
    h5_wrong = write_caffemodel_h5(tmp_path / "wrong.caffemodel.h5", swapped)
    # (the shift read as a variance is negative in places: refused before any NaN is computed)
    with pytest.raises(ConversionError, match="negative BatchNorm variance"):
        convert_caffe(h5_wrong, prototxt=tmp_path / "bn.prototxt")


def test_segnet_bn_inference_mode(deploy, tmp_path):
    text, blobs = deploy
    seg_text = _fork_bn(text, segnet=True)
    folded = {}
    for name, arrays in blobs.items():
        if name.startswith("scale"):
            continue
        if name.startswith("bn"):
            gamma, beta = blobs["scale" + name[2:]]
            mean, var = arrays[0] / BN_FACTOR, arrays[1] / BN_FACTOR
            s = gamma / np.sqrt(var + 1e-5)
            folded[name] = [s.reshape(1, -1, 1, 1).astype(np.float32), (beta - mean * s).reshape(1, -1, 1, 1).astype(np.float32)]
        else:
            folded[name] = arrays
    (tmp_path / "seg.prototxt").write_text(seg_text)
    conversion = convert_caffe(write_caffemodel_h5(tmp_path / "seg.h5", folded), prototxt=tmp_path / "seg.prototxt")
    x = seeded((1, 3, 64, 64), 5)
    # SegNet's INFERENCE forward, y = scale * x + shift, is BVLC's Scale layer alone.
    scale_only = re.sub(r'layer \{ name: "bn[^"]*" type: "BatchNorm"[^\n]*\n', "", text)
    scale_blobs = {("scale" + k[2:] if k.startswith("bn") else k): ([a.reshape(-1) for a in v] if k.startswith("bn") else v) for k, v in folded.items()}
    assert rel(logits(scale_only, scale_blobs, x), run_converted(conversion, x)) < 1e-4
    learn = seg_text.replace("bn_mode: INFERENCE", "bn_mode: LEARN")
    (tmp_path / "learn.prototxt").write_text(learn)
    with pytest.raises(ConversionError, match="bn_mode LEARN"):
        convert_caffe(tmp_path / "seg.h5", prototxt=tmp_path / "learn.prototxt")


def test_unknown_field_named_with_layer_and_line(deploy, tmp_path, capsys):
    text, blobs = deploy
    bad = text.replace("pooling_param { kernel_size: 3 stride: 2 pool: MAX }", "pooling_param { kernel_size: 3 stride: 2 pool: MAX dilation: 2 }")
    (tmp_path / "bad.prototxt").write_text(bad)
    h5 = write_caffemodel_h5(tmp_path / "w.h5", blobs)
    out = tmp_path / "o.pth"
    code, _, err = cli([h5, "--prototxt", tmp_path / "bad.prototxt", "-o", out], capsys)
    line = next(i + 1 for i, l in enumerate(bad.splitlines()) if "dilation: 2 }" in l and "pool1" in l)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "'dilation'" in err and "'pool1'" in err and f"line {line}" in err


def test_training_only_unknown_fields_and_python_layers_are_noted(deploy, tmp_path):
    text, blobs = deploy
    body = re.sub(r"input: \"data\"\n(input_dim: \d+\n)+", "", text)
    data = (
        'layer { name: "data" type: "Python" top: "data" top: "label" include { phase: TRAIN } '
        'python_param { module: "loaders" layer: "ImageNetLoader" param_str: "{\'batch\': 32}" } }\n'
        'layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST } '
        'transform_param { crop_size: 64 mean_value: 104 mean_value: 117 mean_value: 123 use_gpu_transform: true } '
        'data_param { source: "val_lmdb" batch_size: 10 threads: 4 } }\n'
    )
    train_val = body.replace("layer {", data + "layer {", 1).replace(
        'layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob"  }',
        'layer { name: "loss" type: "Python" bottom: "fc" bottom: "label" top: "loss" loss_weight: 1 python_param { module: "losses" layer: "Focal" } }',
    )
    (tmp_path / "train_val.prototxt").write_text(train_val)
    conversion = convert_caffe(write_caffemodel_h5(tmp_path / "w.h5", blobs), prototxt=tmp_path / "train_val.prototxt")
    notes = " ".join(conversion.report.notes)
    assert "data_param.threads" in notes and "transform_param.use_gpu_transform" in notes and "loss (Python Focal)" in notes
    x = seeded((1, 3, 64, 64), 6)
    assert rel(logits(text, blobs, x), run_converted(conversion, x)) < TOL


def test_solver_prototxt_is_named_with_the_command_that_reads_it(deploy, tmp_path, capsys):
    _, blobs = deploy
    solver = tmp_path / "solver.prototxt"
    solver.write_text('net: "train_val.prototxt"\nbase_lr: 0.1\nlr_policy: "step"\nmax_iter: 1000\nsolver_mode: GPU\n')
    h5 = write_caffemodel_h5(tmp_path / "w.h5", blobs)
    out = tmp_path / "o.pth"
    for argv in ([h5, "--prototxt", solver, "-o", out], [solver, "-o", out]):
        code, _, err = cli(argv, capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1
        assert "solver" in err and "convert-solver" in err and "solver.prototxt" in err


# -- 4. Heads and layers that converters and forks add (reader-level) ---------------------------


def _with_head(text: str, head: str) -> str:
    return text.replace('layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob"  }\n', head)


HEADS = {
    # A deploy file that kept its training heads: they read a `label` blob nothing makes.
    "loss_on_missing_label": 'layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }\n'
    'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }\n'
    'layer { name: "top5" type: "Accuracy" bottom: "fc" bottom: "label" top: "top5" accuracy_param { top_k: 5 } }\n',
    # Accuracy reading the Softmax output.
    "accuracy_on_softmax": 'layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }\n'
    'layer { name: "acc" type: "Accuracy" bottom: "prob" bottom: "label" top: "acc" }\n',
    # A multi-label head.
    "sigmoid": 'layer { name: "sig" type: "Sigmoid" bottom: "fc" top: "sig" }\n',
    "sigmoid_in_place": 'layer { name: "sig" type: "Sigmoid" bottom: "fc" top: "fc" }\n',
}


@pytest.mark.parametrize("head", sorted(HEADS))
def test_heads_are_converted_with_a_note(deploy, tmp_path, head):
    text, blobs = deploy
    edited = _with_head(text, HEADS[head])
    assert edited != text
    (tmp_path / "d.prototxt").write_text(edited)
    conversion = convert_caffe(write_caffemodel_h5(tmp_path / "w.h5", blobs), prototxt=tmp_path / "d.prototxt", verify=True)
    x = seeded((2, 3, 64, 64), 7)
    assert rel(logits(text, blobs, x), run_converted(conversion, x)) < TOL  # the logits
    notes = " ".join(conversion.report.notes)
    dropped = {"loss_on_missing_label": ["loss", "top5", "'label', which nothing makes"], "accuracy_on_softmax": ["acc (Accuracy)"],
               "sigmoid": ["sig (Sigmoid)"], "sigmoid_in_place": ["sig (Sigmoid)"]}[head]
    for fragment in dropped:
        assert fragment in notes
    if head.startswith("sigmoid"):
        assert conversion.metadata.source.details["output_activation"] == "sigmoid"


@pytest.mark.parametrize(
    "layer",
    [
        'layer { name: "flat" type: "Flatten" bottom: "pool5" top: "flat" }\n',
        'layer { name: "flat" type: "Reshape" bottom: "pool5" top: "flat" reshape_param { shape { dim: 0 dim: -1 } } }\n',
    ],
    ids=["flatten", "reshape"],
)
def test_flatten_or_reshape_before_the_classifier(deploy, tmp_path, layer):
    text, blobs = deploy
    edited = text.replace(
        'layer { name: "fc" type: "InnerProduct" bottom: "pool5"', layer + 'layer { name: "fc" type: "InnerProduct" bottom: "flat"'
    )
    (tmp_path / "d.prototxt").write_text(edited)
    conversion = convert_caffe(write_caffemodel_h5(tmp_path / "w.h5", blobs), prototxt=tmp_path / "d.prototxt", verify=True)
    x = seeded((2, 3, 64, 64), 8)
    # Caffe's InnerProduct (axis 1) flattens C x H x W itself: the same logits without the layer.
    assert rel(logits(text, blobs, x), run_converted(conversion, x)) < TOL
    assert "flat (" in " ".join(conversion.report.notes)


def test_silence_and_label_layers_of_a_train_val(deploy, tmp_path):
    text, blobs = deploy
    body = re.sub(r"input: \"data\"\n(input_dim: \d+\n)+", "", text)
    data = (
        'layer { name: "data" type: "ImageData" top: "data" top: "label" include { phase: TEST } '
        'transform_param { crop_size: 64 } image_data_param { source: "val.txt" batch_size: 5 } }\n'
        'layer { name: "silence" type: "Silence" bottom: "label" include { phase: TEST } }\n'
    )
    (tmp_path / "tv.prototxt").write_text(body.replace("layer {", data + "layer {", 1))
    conversion = convert_caffe(write_caffemodel_h5(tmp_path / "w.h5", blobs), prototxt=tmp_path / "tv.prototxt")
    assert "silence (Silence)" in " ".join(conversion.report.notes)
    x = seeded((1, 3, 64, 64), 9)
    assert rel(logits(text, blobs, x), run_converted(conversion, x)) < TOL


# -- 5. Preprocessing from the net itself ---------------------------------------------------------


def _cifar(tmp_path, transform: str):
    text = resnet_prototxt(block="basic", widths=(4, 8, 16, 32), input_size=32, pool5=1, name="cifar")
    blobs = weights_for(parse_prototxt(text), seed=11)
    body = re.sub(r"input: \"data\"\n(input_dim: \d+\n)+", "", text)
    data = (
        'layer { name: "cifar" type: "Data" top: "data" top: "label" include { phase: TRAIN } '
        'transform_param { mirror: true crop_size: 32 } data_param { source: "train_lmdb_padded_40" batch_size: 128 } }\n'
        'layer { name: "cifar" type: "Data" top: "data" top: "label" include { phase: TEST } '
        f'transform_param {{ {transform} }} data_param {{ source: "test_lmdb" batch_size: 100 }} }}\n'
    )
    prototxt = tmp_path / "cifar_train_val.prototxt"
    prototxt.write_text(body.replace("layer {", data + "layer {", 1))
    return text, blobs, prototxt, write_caffemodel_h5(tmp_path / "cifar.caffemodel.h5", blobs)


def test_cifar_preprocessing_comes_from_the_test_data_layer(tmp_path, capsys):
    text, blobs, prototxt, h5 = _cifar(tmp_path, "scale: 0.00390625 mean_value: 125.3 mean_value: 123.0 mean_value: 113.9")
    out = tmp_path / "c.pth"
    code, stdout, _ = cli([h5, "--prototxt", prototxt, "--verify", "-o", out, "--json"], capsys)
    assert code == 0 and json.loads(stdout)["verification"]["max_rel_diff"] < TOL
    _, _, metadata = load_checkpoint(out)
    pre = metadata.preprocessing
    assert (pre.resize, pre.crop) == (32, 32)  # the net's 32x32: no resize
    assert pre.mean == pytest.approx((125.3, 123.0, 113.9)) and pre.std == pytest.approx((256.0,) * 3)
    assert pre.channel_order == "BGR" and pre.pixel_max == 255.0
    # What the recorded preprocessing feeds the model is what Caffe's DataTransformer feeds the net:
    # (pixel - mean) * scale, on the 32x32 image.
    pixels = np.random.default_rng(0).integers(0, 256, (1, 3, 32, 32)).astype(np.float32)
    caffe_data = (pixels - np.array([125.3, 123.0, 113.9], np.float32).reshape(1, 3, 1, 1)) * np.float32(0.00390625)
    ours = (pixels - np.array(pre.mean, np.float32).reshape(1, 3, 1, 1)) / np.array(pre.std, np.float32).reshape(1, 3, 1, 1)
    assert np.allclose(caffe_data, ours, rtol=0, atol=1e-6)
    # The flags still override the file.
    code, _, _ = cli([h5, "--prototxt", prototxt, "--mean-values", 1, 2, 3, "-o", out], capsys)
    assert code == 0 and load_checkpoint(out)[2].preprocessing.mean == (1.0, 2.0, 3.0)


def test_mean_file_found_beside_the_prototxt_or_named_in_a_warning(tmp_path, capsys):
    from resnet_port.converters.caffe import write_binaryproto

    text, blobs, prototxt, h5 = _cifar(tmp_path, 'mean_file: "/home/someone/cifar10/mean.binaryproto"')
    out = tmp_path / "c.pth"
    code, stdout, _ = cli([h5, "--prototxt", prototxt, "-o", out, "--json"], capsys)
    assert code == 0
    warnings = json.loads(stdout)["warnings"]
    assert any("/home/someone/cifar10/mean.binaryproto" in w and "--mean" in w for w in warnings)
    assert load_checkpoint(out)[2].preprocessing.mean_image is None
    image = np.random.default_rng(1).uniform(100, 130, (1, 3, 32, 32)).astype(np.float32)
    write_binaryproto(tmp_path / "mean.binaryproto", image)
    code, stdout, _ = cli([h5, "--prototxt", prototxt, "-o", out, "--json"], capsys)
    assert code == 0 and json.loads(stdout)["warnings"] == []
    assert np.array_equal(load_checkpoint(out)[2].preprocessing.mean_image, image[0])


# -- 6. No tracebacks: an input size the weights do not fit ---------------------------------------


def test_verify_on_a_test_net_whose_input_does_not_fit(deploy, tmp_path, capsys):
    text, blobs = deploy
    body = re.sub(r"input: \"data\"\n(input_dim: \d+\n)+", "", text)
    data = (
        'layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST } '
        'transform_param { crop_size: 96 mean_value: 104 mean_value: 117 mean_value: 123 } data_param { source: "val" batch_size: 1 } }\n'
    )
    (tmp_path / "tv.prototxt").write_text(body.replace("layer {", data + "layer {", 1))
    h5 = write_caffemodel_h5(tmp_path / "w.h5", blobs)
    out = tmp_path / "o.pth"
    code, stdout, err = cli([h5, "--prototxt", tmp_path / "tv.prototxt", "--verify", "-o", out, "--json"], capsys)
    assert code == 0, err
    summary = json.loads(stdout)
    [warning] = summary["warnings"]
    # 96 -> a 3x3 last map -> pool5 (2x2, stride 1) leaves 2x2: the classifier would see 128 x 2 x 2.
    assert "InnerProduct 'fc'" in warning and "128 x 2 x 2 = 512" in warning and "take 128" in warning
    verification = summary["verification"]
    assert verification["max_rel_diff"] < TOL
    size = int(verification["input"].split("input size ")[1].split("x")[0])
    assert f"{size}x{size}" in warning and size != 96
    # The size chosen really fits: the interpreter runs there (and the converted model agrees).
    x = seeded((1, 3, size, size), 10)
    assert rel(logits(text, blobs, x), run_converted(convert_caffe(h5, prototxt=tmp_path / "tv.prototxt"), x)) < TOL


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def test_nvidia_raw_data_blobs(deploy, tmp_path):
    """NVIDIA Caffe stores blobs as raw_data (field 12) of raw_data_type (10: FLOAT 1, FLOAT16 2)."""
    text, blobs = deploy
    net = parse_prototxt(text)
    layer_cls = type(net.layer[0])
    half = {name: [a.astype(np.float16).astype(np.float32) for a in arrays] for name, arrays in blobs.items()}
    body = b""
    for i, layer in enumerate(net.layer):
        bare = layer_cls()
        bare.CopyFrom(layer)
        payload = bare.SerializeToString()
        for j, array in enumerate(half.get(layer.name, [])):
            raw_type = 2 if (i + j) % 2 else 1  # FLOAT16 and FLOAT blobs side by side
            raw = array.astype("<f2" if raw_type == 2 else "<f4").tobytes()
            shape = b"".join(_varint(int(d)) for d in array.shape)
            blob = _field(7, _field(1, shape)) + _varint(10 << 3) + _varint(raw_type) + _field(12, raw)
            payload += _field(7, blob)
        body += _field(100, payload)
    path = tmp_path / "nvcaffe_iter_10.caffemodel"
    path.write_bytes(_field(1, b"tiny") + body)
    conversion = convert_caffe(path)
    x = seeded((2, 3, 64, 64), 12)
    assert rel(logits(text, half, x), run_converted(conversion, x)) < TOL


def _cifar_stem_net(tmp_path, transform: str):
    """A CIFAR-style net (3x3 stride-1 stem, no pool1, global pool5) whose TEST data layer takes whole
    images (no crop_size): the file names no input size."""
    text = resnet_prototxt(block="basic", widths=(4, 8, 16, 32), input_size=32, name="cifar_stem")
    text = text.replace("num_output: 8 kernel_size: 7 pad: 3 stride: 2", "num_output: 8 kernel_size: 3 pad: 1 stride: 1")
    text = re.sub(r'layer \{ name: "pool1"[^\n]*\n', "", text).replace('bottom: "pool1"', 'bottom: "conv1"')
    text = text.replace("pooling_param { kernel_size: 2 stride: 1 pool: AVE }", "pooling_param { global_pooling: true pool: AVE }")
    blobs = weights_for(parse_prototxt(text), seed=13)
    body = re.sub(r"input: \"data\"\n(input_dim: \d+\n)+", "", text)
    data = f'layer {{ name: "data" type: "Data" top: "data" top: "label" transform_param {{ {transform} }} data_param {{ source: "test_lmdb" batch_size: 100 }} }}\n'
    prototxt = tmp_path / "tv.prototxt"
    prototxt.write_text(body.replace("layer {", data + "layer {", 1))
    return text, blobs, prototxt, write_caffemodel_h5(tmp_path / "w.h5", blobs)


def test_a_train_crop_is_not_the_test_input_when_the_test_layer_takes_whole_images(tmp_path):
    """A CIFAR train_test prototxt: TRAIN crops 28 (augmentation), TEST has no crop_size, so Caffe
    evaluates whole 32x32 images.  The TRAIN crop must not become the recorded input size."""
    from resnet_port.converters.caffe import write_binaryproto

    text, blobs, prototxt, h5 = _cifar_stem_net(tmp_path, 'mean_file: "mean.binaryproto"')
    train = (
        'layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN } '
        'transform_param { mirror: true crop_size: 28 mean_file: "mean.binaryproto" } data_param { source: "train_lmdb" batch_size: 100 } }\n'
    )
    body = prototxt.read_text().replace('layer { name: "data" type: "Data" top: "data" top: "label" transform_param',
                                        'layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST } transform_param')
    prototxt.write_text(train + body)
    conversion = convert_caffe(h5, prototxt=prototxt)  # no mean file yet: the CIFAR stem's 32x32
    pre = conversion.metadata.preprocessing
    assert (pre.resize, pre.crop) == (32, 32)
    assert any("whole images" in n for n in conversion.report.notes)
    write_binaryproto(tmp_path / "mean.binaryproto", np.full((1, 3, 32, 32), 120.0, np.float32))
    pre = convert_caffe(h5, prototxt=prototxt).metadata.preprocessing  # the mean's size: the images' size
    assert (pre.resize, pre.crop) == (32, 32) and pre.mean_image.shape == (3, 32, 32)


def test_input_size_from_the_mean_file_or_the_cifar_stem(tmp_path):
    from resnet_port.converters.caffe import write_binaryproto

    text, blobs, prototxt, h5 = _cifar_stem_net(tmp_path, 'mean_file: "mean.binaryproto"')
    write_binaryproto(tmp_path / "mean.binaryproto", np.full((1, 3, 32, 32), 120.0, np.float32))
    conversion = convert_caffe(h5, prototxt=prototxt, verify=True)
    assert conversion.spec.stem == "3x3" and conversion.spec.head_pool == "global"
    pre = conversion.metadata.preprocessing
    # Whole images of the mean's 32x32 (Caffe requires the mean to match them): no resize.
    assert (pre.resize, pre.crop) == (32, 32) and pre.mean_image.shape == (3, 32, 32)
    assert conversion.report.warnings == []
    assert conversion.metadata.verification["max_rel_diff"] < TOL
    # Mean values only: the stem says CIFAR; 32x32 is assumed, with a warning.
    _, _, prototxt2, h5b = _cifar_stem_net(tmp_path / "b" if (tmp_path / "b").mkdir() is None else tmp_path, "mean_value: 120")
    conversion = convert_caffe(h5b, prototxt=prototxt2)
    pre = conversion.metadata.preprocessing
    assert (pre.resize, pre.crop) == (32, 32) and pre.mean == (120.0, 120.0, 120.0)
    assert any("32x32 assumed" in w for w in conversion.report.warnings)


def test_solver_state_given_as_the_weights(tmp_path, capsys):
    path = tmp_path / "snap_iter_500.solverstate"
    learned = b"snap_iter_500.caffemodel"
    path.write_bytes(_varint(1 << 3) + _varint(500) + _field(2, learned) + _field(3, b"\x2a\x00"))
    out = tmp_path / "o.pth"
    code, _, err = cli([path, "-o", out], capsys)
    assert code == 2 and "solver state" in err and "snap_iter_500.caffemodel" in err and "500" in err


@pytest.mark.parametrize(
    "header",
    [
        'input: "data"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 72\ninput_dim: 72\n',
        'input: "data"\ninput_shape { dim: 1 dim: 3 dim: 72 dim: 72 }\n',
        'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 72 dim: 72 } } }\n',
    ],
    ids=["input_dim", "input_shape", "Input"],
)
def test_input_size_from_the_net_header(deploy, tmp_path, header):
    text, blobs = deploy
    edited = re.sub(r"input: \"data\"\n(input_dim: \d+\n)+", header, text).replace("pooling_param { kernel_size: 2 stride: 1 pool: AVE }", "pooling_param { global_pooling: true pool: AVE }")
    (tmp_path / "d.prototxt").write_text(edited)
    conversion = convert_caffe(write_caffemodel_h5(tmp_path / "w.h5", blobs), prototxt=tmp_path / "d.prototxt", verify=True)
    pre = conversion.metadata.preprocessing
    assert (pre.resize, pre.crop) == (72, 72)
    assert "72, 72]" in conversion.metadata.verification["input"]


def test_image_data_resize_is_recorded(deploy, tmp_path):
    text, blobs = deploy
    body = re.sub(r"input: \"data\"\n(input_dim: \d+\n)+", "", text)
    data = (
        'layer { name: "data" type: "ImageData" top: "data" top: "label" include { phase: TEST } '
        'transform_param { crop_size: 64 mean_value: 104 mean_value: 117 mean_value: 123 } '
        'image_data_param { source: "val.txt" batch_size: 5 new_height: 80 new_width: 80 } }\n'
    )
    (tmp_path / "tv.prototxt").write_text(body.replace("layer {", data + "layer {", 1))
    conversion = convert_caffe(write_caffemodel_h5(tmp_path / "w.h5", blobs), prototxt=tmp_path / "tv.prototxt")
    pre = conversion.metadata.preprocessing
    assert (pre.resize, pre.crop) == (80, 64) and pre.mean == (104.0, 117.0, 123.0)
