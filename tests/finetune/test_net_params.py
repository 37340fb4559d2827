"""The train net's param { lr_mult decay_mult } entries: read per blob, grouped, and tied to the
reference model's parameters through a real convert-caffe conversion of Kaiming He's ResNet-50."""

from __future__ import annotations

import json

import pytest
from google.protobuf import text_format

from resnet_port.converters.caffe import parse_prototxt, read_prototxt
from resnet_port.finetune import read_solver
from resnet_port.finetune.cli import convert_solver_main
from resnet_port.finetune.net_params import NetParamsError, net_multipliers, read_net_multipliers
from resnet_port.finetune.plan import plan_optimizer

TRAIN_VAL = """\
name: "fragment"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN } }
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 8 kernel_size: 7 stride: 2 } }
layer { name: "bn_conv1" type: "BatchNorm" bottom: "conv1" top: "conv1"
  param { lr_mult: 0 } param { lr_mult: 0 } param { lr_mult: 0 } }
layer { name: "scale_conv1" type: "Scale" bottom: "conv1" top: "conv1"
  param { lr_mult: 1 decay_mult: 0 } param { lr_mult: 1 decay_mult: 0 } scale_param { bias_term: true } }
layer { name: "conv1_relu" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "res2a_branch1" type: "Convolution" bottom: "conv1" top: "res2a_branch1"
  param { lr_mult: 1 } convolution_param { num_output: 8 kernel_size: 1 bias_term: false } }
layer { name: "fc" type: "InnerProduct" bottom: "res2a_branch1" top: "fc"
  param { lr_mult: 10 decay_mult: 1 } inner_product_param { num_output: 3 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "fc" bottom: "label" top: "acc" include { phase: TEST } }
"""


def test_blobs_get_their_multipliers_and_defaults():
    blobs = {b.blob_id: b for b in net_multipliers(parse_prototxt(TRAIN_VAL), "train_val.prototxt")}
    assert set(blobs) == {
        "conv1.blobs[0]", "conv1.blobs[1]", "bn_conv1.blobs[0]", "bn_conv1.blobs[1]", "bn_conv1.blobs[2]",
        "scale_conv1.blobs[0]", "scale_conv1.blobs[1]", "res2a_branch1.blobs[0]", "fc.blobs[0]", "fc.blobs[1]",
    }
    assert (blobs["conv1.blobs[1]"].lr_mult, blobs["conv1.blobs[1]"].decay_mult) == (2.0, 0.0)
    assert (blobs["res2a_branch1.blobs[0]"].lr_mult, blobs["res2a_branch1.blobs[0]"].decay_mult) == (1.0, 1.0)
    # a blob past the last param entry gets Caffe's default 1, 1
    assert (blobs["fc.blobs[1]"].lr_mult, blobs["fc.blobs[1]"].decay_mult) == (1.0, 1.0)
    assert not blobs["bn_conv1.blobs[0]"].trained and blobs["scale_conv1.blobs[0]"].trained


def test_groups_are_the_distinct_multiplier_pairs(tmp_path):
    (tmp_path / "train_val.prototxt").write_text(TRAIN_VAL)
    (tmp_path / "solver.prototxt").write_text(
        'net: "train_val.prototxt"\nbase_lr: 0.01\nlr_policy: "step"\ngamma: 0.1\nstepsize: 100\nmax_iter: 300\nmomentum: 0.9\n'
        "weight_decay: 0.0005\n")
    out = tmp_path / "plan.json"
    # --net omitted: the net named by the solver, found beside it, is read
    assert convert_solver_main([str(tmp_path / "solver.prototxt"), "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    groups = {g["name"]: g["blobs"] for g in data["groups"]}
    assert groups == {
        "lr_mult=1,decay_mult=1": ["conv1.blobs[0]", "res2a_branch1.blobs[0]", "fc.blobs[1]"],
        "lr_mult=2,decay_mult=0": ["conv1.blobs[1]"],
        "lr_mult=1,decay_mult=0": ["scale_conv1.blobs[0]", "scale_conv1.blobs[1]"],
        "lr_mult=10,decay_mult=1": ["fc.blobs[0]"],
    }
    assert any("BatchNorm statistics" in n for n in data["notes"])
    assert data["lr_at"] == {"0": 0.01, "100": pytest.approx(0.001), "200": pytest.approx(0.0001), "300": pytest.approx(1e-5)}


@pytest.mark.parametrize(
    "layer, fragment",
    [
        ('layer { name: "lstm1" type: "LSTM" bottom: "x" top: "y" }', "'lstm1' has type 'LSTM'"),
        ('layer { name: "c" type: "Convolution" bottom: "x" top: "y" param { lr_mult: 1 } param { lr_mult: 2 } '
         'convolution_param { num_output: 2 kernel_size: 1 bias_term: false } }', "2 param entries for 1 blobs"),
    ],
)
def test_unknown_layers_and_surplus_params_are_refused(layer, fragment):
    with pytest.raises(NetParamsError, match=fragment):
        net_multipliers(parse_prototxt(layer), "net.prototxt")


@pytest.mark.slow
def test_kaiming_resnet50_groups_name_every_reference_parameter(tmp_path):
    """Real weights, real names: the deploy net given Caffe-style multipliers, converted by convert-caffe."""
    from resnet_port.checkpoints import save_checkpoint
    from resnet_port.converters.caffe.convert import convert_caffe
    from resnet_port.resnet_ref import build_model
    from tests.caffe.conftest import CAFFE_REF, unpacked

    deploy = CAFFE_REF / "ResNet-50-deploy.prototxt"
    net = read_prototxt(deploy)
    wanted = {}  # blob -> (lr_mult, decay_mult), written here from the layer types
    for layer in net.layer:
        if layer.type == "Convolution":
            pairs = [(1, 1), (2, 0)][: 2 if layer.convolution_param.bias_term else 1]
        elif layer.type == "BatchNorm":
            pairs = [(0, 0)] * 3
        elif layer.type == "Scale":
            pairs = [(1, 0), (1, 0)]
        elif layer.type == "InnerProduct":
            pairs = [(1, 1), (2, 0)]
        else:
            continue
        for i, (lr, dm) in enumerate(pairs):
            layer.param.add(lr_mult=lr, decay_mult=dm)
            wanted[f"{layer.name}.blobs[{i}]"] = (float(lr), float(dm))
    train_val = tmp_path / "train_val.prototxt"
    train_val.write_text(text_format.MessageToString(net))
    solver_path = tmp_path / "solver.prototxt"
    solver_path.write_text('base_lr: 0.1\nlr_policy: "multistep"\ngamma: 0.1\nstepvalue: 150000\nstepvalue: 300000\n'
                           "max_iter: 600000\nmomentum: 0.9\nweight_decay: 0.0001\n")

    conversion = convert_caffe(unpacked("ResNet-50.caffemodel"), deploy)
    plan = plan_optimizer(read_solver(solver_path), read_net_multipliers(train_val), conversion.report.mapped)
    model = build_model(conversion.spec)
    names = {n for n, _ in model.named_parameters()}
    placed = {p: (g.lr_mult, g.decay_mult) for g in plan.groups for p in g.params}
    assert set(placed) | set(plan.frozen) == names and not set(placed) & set(plan.frozen)
    for param, pair in placed.items():
        assert pair == wanted[conversion.report.mapped[param]], param
    assert placed["conv1.bias"] == (2.0, 0.0) and placed["layer1.0.bn1.weight"] == (1.0, 0.0)
    assert placed["layer4.2.conv3.weight"] == (1.0, 1.0) and placed["fc.bias"] == (2.0, 0.0)

    optimizer, scheduler = plan.build(model.named_parameters())
    by_param = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        if name in placed:
            assert (by_param[id(p)]["lr_mult"], by_param[id(p)]["decay_mult"]) == placed[name], name

    checkpoint = tmp_path / "r50.safetensors"
    save_checkpoint(checkpoint, conversion.spec, conversion.state_dict, conversion.metadata)
    out = tmp_path / "plan.json"
    assert convert_solver_main([str(solver_path), "--net", str(train_val), "--checkpoint", str(checkpoint),
                                "--json", str(out)]) == 0
    groups = {g["name"]: set(g["params"]) for g in json.loads(out.read_text())["groups"]}
    assert groups["lr_mult=1,decay_mult=0"] == {p for p, pair in placed.items() if pair == (1.0, 0.0)}


def test_checkpoint_without_a_caffe_report_is_refused(tmp_path, capsys):
    from resnet_port import resnet_ref
    from resnet_port.checkpoints import CheckpointMetadata, save_checkpoint

    spec = resnet_ref.get_spec("resnet18", num_classes=3)
    ckpt = tmp_path / "tv.pth"
    save_checkpoint(ckpt, spec, resnet_ref.build_model(spec).state_dict(), CheckpointMetadata(spec=spec))
    (tmp_path / "net.prototxt").write_text(TRAIN_VAL)
    (tmp_path / "solver.prototxt").write_text('base_lr: 0.1\nlr_policy: "fixed"\n')
    code = convert_solver_main([str(tmp_path / "solver.prototxt"), "--net", str(tmp_path / "net.prototxt"),
                                "--checkpoint", str(ckpt)])
    assert code == 2 and "no Caffe conversion report" in capsys.readouterr().err


def test_v1_layers_blobs_lr_and_weight_decay_become_multipliers():
    net = parse_prototxt(
        'layers { name: "data" type: DATA top: "data" top: "label" include { phase: TRAIN } }\n'
        'layers { name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1" blobs_lr: 1 blobs_lr: 2 '
        "weight_decay: 1 weight_decay: 0 convolution_param { num_output: 4 kernel_size: 3 } }\n"
        'layers { name: "fc" type: INNER_PRODUCT bottom: "conv1" top: "fc" blobs_lr: 10 blobs_lr: 20 '
        "weight_decay: 1 weight_decay: 0 inner_product_param { num_output: 3 } }\n"
        'layers { name: "loss" type: SOFTMAX_LOSS bottom: "fc" bottom: "label" }\n'
    )
    got = {b.blob_id: (b.lr_mult, b.decay_mult) for b in net_multipliers(net, "v1.prototxt")}
    assert got == {"conv1.blobs[0]": (1.0, 1.0), "conv1.blobs[1]": (2.0, 0.0),
                   "fc.blobs[0]": (10.0, 1.0), "fc.blobs[1]": (20.0, 0.0)}
