"""The project's own Gluon-format writer: Gluon itself loads what it writes and computes the same
logits as the reference model; convert-mxnet reads it back exactly."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from resnet_port import resnet_ref
from resnet_port.converters.mxnet import convert_mxnet, write_gluon_parameters
from resnet_port.converters.mxnet.writer import gluon_layout_problems
from resnet_port.errors import ConversionError
from tests.mxnet.conftest import assert_parity, logits_of
from tests.peers.mxnet_cache import PEER_PYTHON

ARCHS = ["resnet18_v1", "resnet50_v1", "resnet34_v2", "resnet50_v2"]


def _randomised(arch: str, seed: int) -> torch.nn.Module:
    """A reference model with every parameter and BN statistic set to seeded non-trivial values."""
    model = resnet_ref.create_model(arch, num_classes=10)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif name.endswith(("running_mean", "bias")):
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
            elif tensor.ndim == 1:  # BN gamma
                tensor.copy_(torch.rand(tensor.shape, generator=generator) * 0.5 + 0.25)
            else:
                fan_in = tensor[0].numel()
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
    return model.eval()


@pytest.mark.parametrize("arch", ARCHS)
def test_round_trip(tmp_path: Path, arch: str) -> None:
    model = _randomised(arch, 0)
    write_gluon_parameters(tmp_path / "w.params", model.spec, model.state_dict())
    conversion = convert_mxnet(tmp_path / "w.params")
    assert conversion.metadata.arch == arch
    expected = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert set(conversion.state_dict) == set(expected)
    assert all(torch.equal(expected[k], v) for k, v in conversion.state_dict.items())


def test_refuses_what_gluon_cannot_express(tmp_path: Path) -> None:
    model = resnet_ref.create_model("resnet50")  # torchvision: stride in the 3x3, no 1x1 biases
    assert "stride_in='3x3' (Gluon: '1x1')" in "; ".join(gluon_layout_problems(model.spec.replace(residual="v1")))
    with pytest.raises(ConversionError, match="cannot express"):
        write_gluon_parameters(tmp_path / "w.params", model.spec, model.state_dict())
    assert not (tmp_path / "w.params").exists()


GLUON_LOAD = """
import json, sys, numpy as np, mxnet as mx
from mxnet.gluon.model_zoo import vision
jobs = json.loads(sys.argv[1])
for job in jobs:
    net = vision.get_resnet(job["version"], job["depth"], classes=10)
    net.load_parameters(job["params"])
    np.save(job["out"], net(mx.nd.array(np.load(job["input"]))).asnumpy())
"""


@pytest.mark.peer
def test_gluon_loads_what_we_write(tmp_path: Path, cache: Path) -> None:  # cache: the peer venv is ready
    x = np.random.default_rng(3).normal(0, 1, (2, 3, 64, 64)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    jobs, expected = [], {}
    for index, arch in enumerate(ARCHS):
        model = _randomised(arch, index + 1)
        write_gluon_parameters(tmp_path / f"{arch}.params", model.spec, model.state_dict())
        depth, version = arch[len("resnet"):].split("_v")
        jobs.append({"version": int(version), "depth": int(depth), "params": str(tmp_path / f"{arch}.params"),
                     "input": str(tmp_path / "x.npy"), "out": str(tmp_path / f"{arch}.npy")})
        expected[arch] = logits_of(model, x)
    done = subprocess.run([str(PEER_PYTHON), "-c", GLUON_LOAD, json.dumps(jobs)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    for arch in ARCHS:
        assert_parity(np.load(tmp_path / f"{arch}.npy"), expected[arch])
