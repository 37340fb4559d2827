"""The referee: outputs of real BVLC Caffe on the real ResNet-50/101 prototxts (caffe-golden/).

The converted model must reproduce fc1000 within 1e-4 relative, the same top-1, and every
intermediate blob the golden README lists at the corresponding module, caught with forward hooks.
The module for each blob is written here from Caffe's naming scheme (res2a = first block of the
first stage, res5c = third block of the last), not taken from the converter.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from resnet_port import resnet_ref
from resnet_port.converters.caffe import CaffeInterpreter, convert_caffe, read_caffemodel
from resnet_port.converters.common import run_converted
from resnet_port.resnet_ref import build_model
from tests.caffe.conftest import CAFFE_REF, GOLDEN, unpacked

TOL = 1e-4
# Golden blob -> (module whose output it is, README's description).
BLOB_MODULES = {
    "conv1": "conv1",  # the raw convolution, before BatchNorm
    "pool1": "maxpool",
    "res2a": "layer1.0",
    "res3a": "layer2.0",
    "res4a": "layer3.0",
    "res5c": "layer4.2",
    "pool5": "avgpool",
    "fc1000": "fc",
}
DEPTHS = [50, pytest.param(101, marks=pytest.mark.slow)]


def rel(reference: np.ndarray, ours: np.ndarray) -> float:
    return float(np.abs(reference.astype(np.float64) - ours).max() / np.abs(reference).max())


def golden_blob(depth: int, name: str) -> np.ndarray:
    return np.load(GOLDEN / f"ResNet-{depth}_224" / f"{name}.npy")


def model_of(conversion) -> torch.nn.Module:
    model = build_model(conversion.spec)
    full = model.state_dict()
    full.update(conversion.state_dict)
    model.load_state_dict(full)
    return model.eval()


def hooked_forward(model: torch.nn.Module, x: np.ndarray) -> dict[str, np.ndarray]:
    captured: dict[str, np.ndarray] = {}
    modules = dict(model.named_modules())
    handles = [
        modules[module].register_forward_hook(lambda m, i, o, blob=blob: captured.__setitem__(blob, o.detach().clone().numpy()))
        for blob, module in BLOB_MODULES.items()
    ]
    try:
        with torch.inference_mode():
            logits = model(torch.from_numpy(x))
    finally:
        for handle in handles:
            handle.remove()
    captured["prob"] = torch.softmax(logits, 1).numpy()
    return captured


@pytest.fixture(scope="module", params=DEPTHS)
def golden_case(request):
    depth = request.param
    conversion = convert_caffe(unpacked(f"ResNet-{depth}.caffemodel"))
    return depth, conversion


def test_weights_read_match_the_published_checksum(golden_case):
    """The reader returns exactly Caffe's floats: the README's SHA-256 over all blobs in net order."""
    import hashlib

    depth, _ = golden_case
    model = read_caffemodel(unpacked(f"ResNet-{depth}.caffemodel"))
    report = json.loads((GOLDEN / f"ResNet-{depth}_report.json").read_text())
    digest = hashlib.sha256()
    count = 0
    for name in model.layer_names():
        for blob in model.blobs[name]:
            digest.update(np.ascontiguousarray(blob, dtype="<f4").tobytes())
            count += 1
    assert count == report["weights"]["param_blobs"]
    assert digest.hexdigest() == report["weights"]["sha256_float32_le_in_net_order"]


def test_converted_model_reproduces_every_golden_blob(golden_case):
    depth, conversion = golden_case
    assert conversion.spec == resnet_ref.get_spec(f"caffe_resnet{depth}")
    assert conversion.metadata.arch == f"caffe_resnet{depth}"
    x = golden_blob(depth, "data")
    outputs = hooked_forward(model_of(conversion), x)
    for blob in list(BLOB_MODULES) + ["prob"]:
        reference = golden_blob(depth, blob)
        ours = outputs[blob].reshape(reference.shape)
        assert rel(reference, ours) < TOL, (blob, rel(reference, ours))
    logits = golden_blob(depth, "fc1000")
    assert (outputs["fc1000"].argmax(1) == logits.argmax(1)).all()
    report = json.loads((GOLDEN / f"ResNet-{depth}_report.json").read_text())
    assert list(outputs["fc1000"].argmax(1)) == report["224"]["top1"]


def test_interpreter_reproduces_every_golden_blob(golden_case):
    depth, _ = golden_case
    model = read_caffemodel(unpacked(f"ResNet-{depth}.caffemodel"))
    interpreter = CaffeInterpreter(model.net, model.blobs)
    x = golden_blob(depth, "data")
    values = interpreter.forward({"data": x})
    for blob in ["pool1", "res2a", "res3a", "res4a", "res5c", "pool5", "fc1000", "prob"]:
        assert rel(golden_blob(depth, blob), values[blob].numpy()) < 1e-5, blob
    raw = interpreter.forward({"data": x}, until="conv1")["conv1"].numpy()
    assert rel(golden_blob(depth, "conv1"), raw) < 1e-5


@pytest.mark.parametrize("depth", DEPTHS)
def test_h5_and_prototxt_give_the_same_weights(depth):
    """.caffemodel alone, .caffemodel + prototxt, .h5 + prototxt: one state_dict, bit for bit."""
    prototxt = CAFFE_REF / f"ResNet-{depth}-deploy.prototxt"
    plain = convert_caffe(unpacked(f"ResNet-{depth}.caffemodel"))
    for conversion in (
        convert_caffe(unpacked(f"ResNet-{depth}.caffemodel"), prototxt=prototxt),
        convert_caffe(unpacked(f"ResNet-{depth}.caffemodel.h5"), prototxt=prototxt),
    ):
        assert conversion.spec == plain.spec
        assert conversion.state_dict.keys() == plain.state_dict.keys()
        for key, value in plain.state_dict.items():
            assert torch.equal(conversion.state_dict[key], value), key


def test_h5_conversion_reproduces_fc1000():
    conversion = convert_caffe(unpacked("ResNet-50.caffemodel.h5"), prototxt=CAFFE_REF / "ResNet-50-deploy.prototxt")
    logits = run_converted(conversion, golden_blob(50, "data")).numpy()
    reference = golden_blob(50, "fc1000")
    assert rel(reference, logits) < TOL
    assert (logits.argmax(1) == reference.argmax(1)).all()


def test_verify_records_the_interpreter_difference():
    conversion = convert_caffe(unpacked("ResNet-50.caffemodel"), verify=True)
    verification = conversion.metadata.verification
    assert verification["max_rel_diff"] < TOL and verification["top1_agreement"] == 1.0
    assert verification["output"] == "fc1000" and verification["passed"] is True


def test_cli_checkpoint_reproduces_fc1000_after_save_and_load(tmp_path, capsys):
    from resnet_port.checkpoints import load_model
    from resnet_port.converters.caffe.cli import main

    out = tmp_path / "r50.safetensors"
    code = main([str(unpacked("ResNet-50.caffemodel")), "--prototxt", str(CAFFE_REF / "ResNet-50-deploy.prototxt"),
                 "--mean", str(CAFFE_REF / "ResNet_mean.binaryproto"), "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    model, metadata = load_model(out)
    assert metadata.arch == "caffe_resnet50" and metadata.preprocessing.mean_image.shape == (3, 224, 224)
    with torch.inference_mode():
        logits = model.eval()(torch.from_numpy(golden_blob(50, "data"))).numpy()
    assert rel(golden_blob(50, "fc1000"), logits) < TOL
