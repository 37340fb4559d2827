"""The prototxt reader on the real release prototxts, a train_val-style net and the V1 format."""

from __future__ import annotations

import re

import pytest

from resnet_port.converters.caffe import parse_prototxt, read_prototxt
from resnet_port.converters.caffe.errors import CaffeFormatError
from tests.caffe.conftest import CAFFE_REF



@pytest.mark.parametrize("depth", [50, 101, 152])
def test_release_prototxts_parse_with_every_layer(depth):
    path = CAFFE_REF / f"ResNet-{depth}-deploy.prototxt"
    net = read_prototxt(path)
    text = path.read_text()
    # An independent count: every `layer {` block of the file, plus the upgraded input header.
    assert len(net.layer) == text.count("layer {") + 1
    assert net.layer[0].type == "Input" and list(net.layer[0].input_param.shape[0].dim) == [1, 3, 224, 224]
    names = re.findall(r'name:\s*"([^"]+)"', text)[1:]  # the first is the net's name
    assert [layer.name for layer in net.layer[1:]] == names
    bn = [layer for layer in net.layer if layer.type == "BatchNorm"]
    assert bn and all(layer.batch_norm_param.use_global_stats for layer in bn)
    pool5 = next(layer for layer in net.layer if layer.name == "pool5")
    assert pool5.pooling_param.pool == 1 and pool5.pooling_param.kernel_size == 7  # AVE


TRAIN_VAL = """
name: "ft"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
  transform_param { mirror: true crop_size: 224 mean_value: 104 mean_value: 117 mean_value: 123 }
  data_param { source: "train_lmdb" batch_size: 32 backend: LMDB } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 0.5 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 8 kernel_size: 3 weight_filler { type: "msra" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "conv1" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "conv1" bottom: "label" top: "acc"
  include { phase: TEST } accuracy_param { top_k: 5 } }
"""


def test_train_val_keeps_param_specs_and_rules():
    net = parse_prototxt(TRAIN_VAL)
    conv = net.layer[1]
    assert [(p.lr_mult, p.decay_mult) for p in conv.param] == [(0.5, 1.0), (2.0, 0.0)]
    assert net.layer[0].include[0].phase == 0 and net.layer[3].include[0].phase == 1
    assert list(net.layer[0].transform_param.mean_value) == [104, 117, 123]
    # Unset lr_mult reads as Caffe's default 1.
    assert parse_prototxt('layer { name: "c" type: "Scale" param { decay_mult: 0 } }').layer[0].param[0].lr_mult == 1.0


def test_v1_layers_are_upgraded_like_caffe():
    v1 = """name: "old" input: "data" input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8
    layers { name: "c" type: CONVOLUTION bottom: "data" top: "c" blobs_lr: 1 blobs_lr: 2
      weight_decay: 1 weight_decay: 0 convolution_param { num_output: 4 kernel_size: 3 } }
    layers { name: "r" type: RELU bottom: "c" top: "c" }
    layers { name: "p" type: POOLING bottom: "c" top: "p" pooling_param { pool: AVE kernel_size: 2 } }
    layers { name: "fc" type: INNER_PRODUCT bottom: "p" top: "fc" inner_product_param { num_output: 5 } }
    layers { name: "prob" type: SOFTMAX bottom: "fc" top: "prob" }"""
    net = parse_prototxt(v1)
    assert [layer.type for layer in net.layer] == ["Input", "Convolution", "ReLU", "Pooling", "InnerProduct", "Softmax"]
    assert [(p.lr_mult, p.decay_mult) for p in net.layer[1].param] == [(1.0, 1.0), (2.0, 0.0)]
    assert net.layer[1].convolution_param.num_output == 4
    assert list(net.layer[0].input_param.shape[0].dim) == [1, 3, 8, 8]
    assert not net.layers


@pytest.mark.parametrize(
    "text, expected",
    [
        ('layer { name: "c" type: "Convolution" convolution_param { num_outputs: 3 } }', "num_outputs"),
        ("this is not a prototxt", "not a Caffe net prototxt"),
    ],
)
def test_bad_prototxt_text_is_named(text, expected):
    with pytest.raises(CaffeFormatError, match=expected):
        parse_prototxt(text, "bad.prototxt")


def test_binary_file_as_prototxt(tmp_path):
    path = tmp_path / "model.prototxt"
    path.write_bytes(b"\x0a\x03abc\xff\xfe\x00")
    with pytest.raises(CaffeFormatError, match=r"model\.prototxt.*not a text prototxt"):
        read_prototxt(path)
