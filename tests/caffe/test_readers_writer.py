"""Readers and writer against files Caffe itself wrote, and against protobuf's own parser."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from resnet_port.converters.caffe import (
    CaffeInterpreter,
    convert_caffe,
    message_class,
    parse_prototxt,
    read_binaryproto,
    read_caffemodel,
    read_caffemodel_h5,
    write_binaryproto,
    write_caffemodel,
    write_caffemodel_h5,
)
from tests.caffe.conftest import CAFFE_REF, GOLDEN, unpacked


def bits(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype="<f4").view("<u4")


def test_golden_caffemodel_written_back_is_bit_exact(tmp_path):
    original = read_caffemodel(unpacked("ResNet-50.caffemodel"))
    out = write_caffemodel(tmp_path / "copy.caffemodel", original.net, original.blobs)
    again = read_caffemodel(out)
    assert [layer for layer in again.net.layer] == [layer for layer in original.net.layer]
    digest = hashlib.sha256()
    for name in original.layer_names():
        assert len(again.blobs[name]) == len(original.blobs[name])
        for a, b in zip(original.blobs[name], again.blobs[name]):
            assert a.shape == b.shape and np.array_equal(bits(a), bits(b)), name
            digest.update(bits(b).tobytes())
    report = json.loads((GOLDEN / "ResNet-50_report.json").read_text())
    assert digest.hexdigest() == report["weights"]["sha256_float32_le_in_net_order"]
    # protobuf's own parser reads the written file to the same floats (not only our reader).
    full = message_class("NetParameter")()
    full.ParseFromString(out.read_bytes())
    conv = next(layer for layer in full.layer if layer.name == "res4f_branch2b")
    assert np.array_equal(bits(np.asarray(conv.blobs[0].data, np.float32)), bits(original.blobs["res4f_branch2b"][0].ravel()))
    assert list(conv.blobs[0].shape.dim) == [256, 256, 3, 3]
    # And the golden-data path converts it to the very same weights.
    a, b = convert_caffe(unpacked("ResNet-50.caffemodel")), convert_caffe(out)
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)


def test_caffe_written_h5_matches_caffe_written_caffemodel_and_round_trips(tmp_path):
    model = read_caffemodel(unpacked("ResNet-50.caffemodel"))
    h5 = read_caffemodel_h5(unpacked("ResNet-50.caffemodel.h5"))
    weighted = {name: blobs for name, blobs in model.blobs.items() if blobs}
    assert set(h5.blobs) == set(model.blobs)  # Caffe writes a group for every layer, empty ones too
    assert {name for name, blobs in h5.blobs.items() if blobs} == set(weighted)
    for name, blobs in weighted.items():
        assert all(np.array_equal(bits(a), bits(b)) for a, b in zip(blobs, h5.blobs[name])), name
    out = write_caffemodel_h5(tmp_path / "copy.caffemodel.h5", h5.blobs)
    again = read_caffemodel(out)  # dispatched by the HDF5 signature
    assert again.net is None
    assert all(np.array_equal(bits(a), bits(b)) for n in weighted for a, b in zip(weighted[n], again.blobs[n]))


def test_legacy_blob_shapes_convert_identically(tiny, tmp_path):
    legacy = write_caffemodel(tmp_path / "legacy.caffemodel", tiny["net"], tiny["blobs"], legacy_shapes=True)
    raw = message_class("NetParameter")()
    raw.ParseFromString(legacy.read_bytes())
    fc = next(layer for layer in raw.layer if layer.name == "fc")
    assert not fc.blobs[0].HasField("shape") and (fc.blobs[0].num, fc.blobs[0].channels, fc.blobs[0].height) == (1, 1, 10)
    a, b = convert_caffe(tiny["model"]), convert_caffe(legacy)
    assert a.state_dict.keys() == b.state_dict.keys()
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)


def _v1_net_bytes(rng) -> tuple[bytes, dict[str, list[np.ndarray]]]:
    """A V1-format caffemodel built with protobuf directly (enum types, blobs_lr, legacy shapes)."""
    net = message_class("NetParameter")(name="v1net")
    net.input.append("data")
    net.input_dim.extend([1, 3, 12, 12])
    weights = {
        "conv": [rng.standard_normal((4, 3, 3, 3)).astype(np.float32), rng.standard_normal(4).astype(np.float32)],
        "ip": [rng.standard_normal((5, 4 * 5 * 5)).astype(np.float32), rng.standard_normal(5).astype(np.float64)],
    }

    def add(name, type_name, bottom, top, blobs=()):
        layer = net.layers.add(name=name, type=type_name)
        layer.bottom.append(bottom)
        layer.top.append(top)
        for array in blobs:
            blob = layer.blobs.add()
            dims = (1,) * (4 - array.ndim) + array.shape
            blob.num, blob.channels, blob.height, blob.width = dims
            (blob.double_data if array.dtype == np.float64 else blob.data).extend(array.ravel().tolist())
        return layer

    conv = add("conv", 4, "data", "conv", weights["conv"])  # CONVOLUTION
    conv.blobs_lr.extend([1, 2])
    conv.weight_decay.extend([1, 0])
    conv.convolution_param.num_output = 4
    conv.convolution_param.kernel_size.append(3)
    add("relu", 18, "conv", "conv")  # RELU
    pool = add("pool", 17, "conv", "pool")  # POOLING: 10x10 -> ceil((10-2)/2)+1 = 5
    pool.pooling_param.kernel_size = 2
    pool.pooling_param.stride = 2
    ip = add("ip", 14, "pool", "ip", weights["ip"])  # INNER_PRODUCT
    ip.inner_product_param.num_output = 5
    add("prob", 20, "ip", "prob")  # SOFTMAX
    return net.SerializeToString(), weights


def test_v1_caffemodel_is_upgraded_with_legacy_shapes_and_double_data(tmp_path):
    data, weights = _v1_net_bytes(np.random.default_rng(0))
    path = tmp_path / "old.caffemodel"
    path.write_bytes(data)
    model = read_caffemodel(path)
    assert [layer.type for layer in model.net.layer] == ["Input", "Convolution", "ReLU", "Pooling", "InnerProduct", "Softmax"]
    conv = model.net.layer[1]
    assert [(p.lr_mult, p.decay_mult) for p in conv.param] == [(1.0, 1.0), (2.0, 0.0)]
    assert model.blobs["conv"][0].shape == (4, 3, 3, 3) and model.blobs["conv"][1].shape == (1, 1, 1, 4)
    assert model.blobs["ip"][1].dtype == np.float64 and np.array_equal(model.blobs["ip"][1].ravel(), weights["ip"][1])
    # The interpreter runs the upgraded net; an independent NumPy forward agrees.
    x = np.random.default_rng(1).standard_normal((1, 3, 12, 12))
    out = CaffeInterpreter(model.net, model.blobs).forward({"data": x})["prob"].numpy()
    w, b = weights["conv"]
    conv_out = np.zeros((4, 10, 10))
    for o in range(4):
        for i in range(10):
            for j in range(10):
                conv_out[o, i, j] = (x[0, :, i : i + 3, j : j + 3] * w[o]).sum() + b[o]
    pooled = np.maximum(conv_out, 0).reshape(4, 5, 2, 5, 2).max(axis=(2, 4))
    logits = weights["ip"][0].astype(np.float64) @ pooled.ravel() + weights["ip"][1]
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert np.abs(out[0] - expected).max() < 1e-5


def test_release_mean_binaryproto():
    mean = read_binaryproto(CAFFE_REF / "ResNet_mean.binaryproto")
    assert mean.shape == (1, 3, 224, 224) and mean.dtype == np.float32
    assert 0 <= mean.min() and mean.max() <= 255
    assert mean[0, 0].mean() < mean[0, 2].mean()  # BGR: blue below red on ImageNet


def test_binaryproto_round_trip(tmp_path):
    array = np.random.default_rng(2).uniform(0, 255, (1, 3, 5, 7)).astype(np.float32)
    write_binaryproto(tmp_path / "m.binaryproto", array)
    assert np.array_equal(read_binaryproto(tmp_path / "m.binaryproto"), array)


def test_prototxt_alone_is_not_needed_and_graph_from_caffemodel_matches_prototxt(tiny):
    from_model = read_caffemodel(tiny["model"]).net
    from_text = parse_prototxt(tiny["text"])
    assert [layer.name for layer in from_model.layer] == [layer.name for layer in from_text.layer]


@pytest.mark.parametrize("cut", [1, 7, 100])
def test_every_truncation_point_is_refused(tiny, tmp_path, cut):
    from resnet_port.converters.caffe import CaffeFormatError

    data = tiny["model"].read_bytes()
    path = tmp_path / "cut.caffemodel"
    path.write_bytes(data[:-cut])
    with pytest.raises(CaffeFormatError, match="cut.caffemodel"):
        read_caffemodel(path)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_h5_is_refused_cleanly(tiny, tmp_path, damage):
    from resnet_port.converters.caffe import CaffeFormatError

    data = bytearray(tiny["h5"].read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        for position in range(200, len(data), 997):
            data[position] ^= 0xFF
    path = tmp_path / "damaged.caffemodel.h5"
    path.write_bytes(bytes(data))
    with pytest.raises(CaffeFormatError, match="damaged.caffemodel.h5"):
        read_caffemodel_h5(path)
