"""export_caffe (reference weights -> a release-layout Caffe net, used by the demo) against the real
release: the same layers, names, types and parameters in the same order, for every depth."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from resnet_port.converters.caffe import convert_caffe, read_prototxt, write_caffemodel
from resnet_port.converters.caffe.export import export_caffe
from resnet_port.errors import ConversionError
from resnet_port.resnet_ref import create_model, get_spec
from tests.shared_dir import SHARED


def _layers(net):
    return [(layer.name, layer.type, tuple(layer.bottom), tuple(layer.top)) for layer in net.layer]


@pytest.mark.parametrize("depth", [50, 101, 152])
def test_export_reproduces_the_release_prototxt(depth):
    with torch.device("meta"):
        model = create_model(f"caffe_resnet{depth}")
    state = {k: torch.zeros(v.shape) for k, v in model.state_dict().items()}
    _, ours, _ = export_caffe(model.spec, state, name=f"ResNet-{depth}")
    real = read_prototxt(SHARED / "reference" / "caffe" / f"ResNet-{depth}-deploy.prototxt")
    ours_rows, real_rows = _layers(ours), _layers(real)
    assert len(ours_rows) == len(real_rows)
    assert ours_rows == real_rows
    # The parameters Caffe acts on (the release writes `pad: 0` and `bias_term` on some layers only).
    real_layers = {layer.name: layer for layer in real.layer}
    for layer in ours.layer:
        theirs = real_layers[layer.name]
        if layer.type == "Convolution":
            a, b = layer.convolution_param, theirs.convolution_param
            assert (a.num_output, list(a.kernel_size), list(a.stride) or [1], list(a.pad) or [0], a.bias_term) == (
                b.num_output, list(b.kernel_size), list(b.stride) or [1], list(b.pad) or [0], b.bias_term), layer.name
        elif layer.type == "Pooling":
            a, b = layer.pooling_param, theirs.pooling_param
            assert (a.pool, a.kernel_size, a.stride, a.pad) == (b.pool, b.kernel_size, b.stride, b.pad), layer.name


def test_exported_files_convert_back_to_the_same_weights(tmp_path):
    torch.manual_seed(0)
    spec = get_spec("caffe_resnet50").replace(layers=(1, 1, 1, 1), num_classes=5)
    from resnet_port.resnet_ref import build_model

    model = build_model(spec).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 1.5)
    text, net, blobs = export_caffe(spec, model.state_dict())
    (tmp_path / "net.prototxt").write_text(text)
    write_caffemodel(tmp_path / "net.caffemodel", net, blobs)
    conversion = convert_caffe(tmp_path / "net.caffemodel", prototxt=tmp_path / "net.prototxt", verify=True)
    assert conversion.spec == spec
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        # statistics pass through Caffe's scale factor (x * s / s in float32): not always bit-exact
        np.testing.assert_allclose(conversion.state_dict[key].numpy(), value.numpy(), rtol=1e-6, atol=1e-7, err_msg=key)
    assert conversion.metadata.verification["max_rel_diff"] < 1e-5


def test_export_refuses_what_caffe_release_nets_cannot_express():
    with torch.device("meta"):
        model = create_model("resnet50_v2")
    with pytest.raises(ConversionError, match="residual=v2"):
        export_caffe(model.spec, model.state_dict())
