"""Gluon ResNets beyond the model zoo's five depths (other stage counts, class counts and input
sizes), built by the real Gluon in the peer venv and saved three ways (save_parameters, export, and
the pre-1.3 save_params): the converter must read the layout from the file, not from a list of known
depths."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from resnet_port.converters.mxnet import convert_mxnet
from tests.mxnet.conftest import assert_parity, logits_of, model_of
from tests.peers.mxnet_cache import PEER_PYTHON

pytestmark = pytest.mark.peer

# name: (Gluon class, block, layers, channels, classes)
LAYOUTS = {
    "v1_bottleneck_1121": ("ResNetV1", "BottleneckV1", [1, 1, 2, 1], [64, 256, 512, 1024, 2048], 7),
    "v1_basic_2111": ("ResNetV1", "BasicBlockV1", [2, 1, 1, 1], [64, 64, 128, 256, 512], 12),
    "v2_bottleneck_2112": ("ResNetV2", "BottleneckV2", [2, 1, 1, 2], [64, 256, 512, 1024, 2048], 5),
    "v2_basic_1211": ("ResNetV2", "BasicBlockV2", [1, 2, 1, 1], [64, 64, 128, 256, 512], 3),
}
SIZE = 96

GLUON_SCRIPT = """
import json, sys, zlib, numpy as np, mxnet as mx
from mxnet.gluon.model_zoo.vision import resnet
layouts, root, size = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for name, (cls, block, layers, channels, classes) in layouts.items():
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    net = getattr(resnet, cls)(getattr(resnet, block), layers, channels, classes=classes)
    net.initialize(mx.init.Zero())
    x = rng.normal(0, 1, (2, 3, size, size)).astype(np.float32)
    net(mx.nd.array(x))
    params = net.collect_params()
    for key, p in params.items():
        shape = p.shape
        if key.endswith("running_var"):
            value = 10 ** rng.uniform(-3, 0.3, shape)
        elif key.endswith("running_mean") or key.endswith("beta") or key.endswith("bias"):
            value = rng.normal(0, 0.2, shape)
        elif key.endswith("gamma"):
            value = rng.uniform(0.3, 1.0, shape)
        else:
            value = rng.normal(0, np.sqrt(2.0 / np.prod(shape[1:])), shape)
        p.set_data(mx.nd.array(value.astype(np.float32)))
    if cls == "ResNetV2":  # the input BN: gamma and beta as Gluon leaves them (never trained)
        bn = net.features[0]
        bn.gamma.set_data(mx.nd.ones(3)); bn.beta.set_data(mx.nd.zeros(3))
    net.hybridize()
    np.save(f"{root}/{name}-input.npy", x)
    np.save(f"{root}/{name}-logits.npy", net(mx.nd.array(x)).asnumpy())
    net.save_parameters(f"{root}/{name}.params")
    net.export(f"{root}/{name}-export", 0)
    net.save_params(f"{root}/{name}-legacy.params")  # the pre-1.3 format: prefix-stripped scoped names
"""


@pytest.fixture(scope="module")
def gluon_layouts(tmp_path_factory, cache: Path) -> Iterator[Path]:  # cache: the peer venv exists once it is ready
    root = tmp_path_factory.mktemp("gluon_layouts")
    done = subprocess.run(
        [str(PEER_PYTHON), "-c", GLUON_SCRIPT, json.dumps(LAYOUTS), str(root), str(SIZE)],
        capture_output=True, text=True, timeout=300,
    )
    if done.returncode != 0:
        raise RuntimeError(f"Gluon failed: {done.stderr[-2000:]}")
    yield root
    shutil.rmtree(root, ignore_errors=True)  # several hundred MB: free the disk for the modules after this one


@pytest.mark.parametrize("name", list(LAYOUTS))
@pytest.mark.parametrize("form", ["save_parameters", "export", "save_params"])
def test_other_gluon_layouts(gluon_layouts: Path, name: str, form: str) -> None:
    cls, block, layers, _, classes = LAYOUTS[name]
    if form == "save_parameters":
        conversion = convert_mxnet(gluon_layouts / f"{name}.params")
    elif form == "save_params":
        conversion = convert_mxnet(gluon_layouts / f"{name}-legacy.params")
        assert conversion.report.mapped["fc.weight"] == "dense0_weight"
    else:
        conversion = convert_mxnet(gluon_layouts / f"{name}-export-0000.params")  # finds -symbol.json beside it
    spec = conversion.spec
    assert spec.layers == tuple(layers) and spec.num_classes == classes
    assert spec.residual == ("v1" if cls == "ResNetV1" else "v2")
    assert spec.block == ("bottleneck" if "Bottleneck" in block else "basic")
    assert conversion.metadata.arch is None  # no registered arch has these stage counts
    x = np.load(gluon_layouts / f"{name}-input.npy")
    assert_parity(np.load(gluon_layouts / f"{name}-logits.npy"), logits_of(model_of(conversion), x))
