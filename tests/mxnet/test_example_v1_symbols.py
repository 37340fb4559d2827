"""MXNet's example ``image-classification/symbols/resnet-v1.py`` nets, built by the real MXNet.

These post-activation symbols differ from the classic ``resnet.py`` (v2) ones that the fixture cache
holds: an ``identity`` node (op ``_copy``) on the data, a stride in each bottleneck's first 1x1, a
projection on the first unit of every stage, eps 2e-5 without an input BN, and for CIFAR-size inputs
a 3x3/1 conv -> BN stem with *no* ReLU and no pool.  float16 training symbols ``Cast`` the data and
the logits, training symbols keep ``Dropout``.  convert-mxnet used to refuse them all at the
``_copy`` node.  The logits are MXNet's own (``bind`` + ``forward(is_train=False)``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from resnet_port.converters.mxnet import convert_mxnet
from resnet_port.errors import ConversionError
from tests.mxnet.conftest import assert_parity, logits_of, model_of
from tests.peers.mxnet_cache import PEER_PYTHON

pytestmark = pytest.mark.peer

# name: (units per stage, filter list, classes, input size, bottleneck, extra pass-through ops)
NETS = {
    "v1_bottleneck_1121": ([1, 1, 2, 1], [64, 256, 512, 1024, 2048], 11, 96, True, ""),
    "v1_basic_2111_cast_dropout": ([2, 1, 1, 1], [64, 64, 128, 256, 512], 6, 96, False, "cast,dropout"),
    "v1_cifar_basic_222": ([2, 2, 2], [16, 16, 32, 64], 10, 28, False, ""),
}

SCRIPT = """
import json, sys, zlib, numpy as np, mxnet as mx
nets, root = json.loads(sys.argv[1]), sys.argv[2]

def bn(d, n): return mx.sym.BatchNorm(data=d, fix_gamma=False, eps=2e-5, momentum=0.9, name=n)
def conv(d, f, k, s, p, n): return mx.sym.Convolution(data=d, num_filter=f, kernel=k, stride=s, pad=p, no_bias=True, name=n)
def relu(d, n): return mx.sym.Activation(data=d, act_type="relu", name=n)

def unit(data, nf, stride, match, name, bottle):
    if bottle:
        a = relu(bn(conv(data, nf // 4, (1, 1), stride, (0, 0), name + "_conv1"), name + "_bn1"), name + "_relu1")
        a = relu(bn(conv(a, nf // 4, (3, 3), (1, 1), (1, 1), name + "_conv2"), name + "_bn2"), name + "_relu2")
        body = bn(conv(a, nf, (1, 1), (1, 1), (0, 0), name + "_conv3"), name + "_bn3")
    else:
        a = relu(bn(conv(data, nf, (3, 3), stride, (1, 1), name + "_conv1"), name + "_bn1"), name + "_relu1")
        body = bn(conv(a, nf, (3, 3), (1, 1), (1, 1), name + "_conv2"), name + "_bn2")
    shortcut = data if match else bn(conv(data, nf, (1, 1), stride, (0, 0), name + "_conv1sc"), name + "_sc")
    return relu(body + shortcut, name + "_relu3")

for name, (units, filters, classes, size, bottle, extra) in nets.items():
    data = mx.sym.Variable("data")
    data = mx.sym.Cast(data, dtype="float32", name="cast_in") if "cast" in extra else mx.sym.identity(data=data, name="id")
    if size <= 32:
        body = bn(conv(data, filters[0], (3, 3), (1, 1), (1, 1), "conv0"), "bn0")
    else:
        body = relu(bn(conv(data, filters[0], (7, 7), (2, 2), (3, 3), "conv0"), "bn0"), "relu0")
        body = mx.sym.Pooling(data=body, kernel=(3, 3), stride=(2, 2), pad=(1, 1), pool_type="max")
    for i, n in enumerate(units):
        body = unit(body, filters[i + 1], (1, 1) if i == 0 else (2, 2), False, "stage%d_unit1" % (i + 1), bottle)
        for j in range(n - 1):
            body = unit(body, filters[i + 1], (1, 1), True, "stage%d_unit%d" % (i + 1, j + 2), bottle)
    pool = mx.sym.Pooling(data=body, global_pool=True, kernel=(7, 7), pool_type="avg", name="pool1")
    flat = mx.sym.Flatten(data=pool)
    if "dropout" in extra:
        flat = mx.sym.Dropout(data=flat, p=0.5, name="drop1")
    fc = mx.sym.FullyConnected(data=flat, num_hidden=classes, name="fc1")
    if "cast" in extra:
        fc = mx.sym.Cast(data=fc, dtype="float32", name="cast_out")
    sym = mx.sym.SoftmaxOutput(data=fc, name="softmax")
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    arg_shapes, _, aux_shapes = fc.infer_shape(data=(2, 3, size, size))
    args, auxs = {}, {}
    for key, shape in zip(fc.list_arguments(), arg_shapes):
        if key == "data":
            continue
        if key.endswith("gamma"):
            value = rng.uniform(0.3, 1.0, shape)
        elif key.endswith("beta") or key.endswith("bias"):
            value = rng.normal(0, 0.2, shape)
        else:
            value = rng.normal(0, np.sqrt(2.0 / np.prod(shape[1:])), shape)
        args[key] = mx.nd.array(value.astype(np.float32))
    for key, shape in zip(fc.list_auxiliary_states(), aux_shapes):
        value = rng.normal(0, 0.2, shape) if key.endswith("mean") else 10 ** rng.uniform(-2, 0.3, shape)
        auxs[key] = mx.nd.array(value.astype(np.float32))
    x = rng.normal(0, 1, (2, 3, size, size)).astype(np.float32)
    executor = fc.bind(mx.cpu(), {**args, "data": mx.nd.array(x)}, aux_states=auxs)
    np.save(f"{root}/{name}-input.npy", x)
    np.save(f"{root}/{name}-logits.npy", executor.forward(is_train=False)[0].asnumpy())
    sym.save(f"{root}/{name}-symbol.json")
    saved = {"arg:" + k: v for k, v in args.items()}
    saved.update({"aux:" + k: v for k, v in auxs.items()})
    mx.nd.save(f"{root}/{name}-0000.params", saved)
"""


@pytest.fixture(scope="module")
def example_nets(tmp_path_factory, cache: Path) -> Iterator[Path]:  # cache: the peer venv exists once it is ready
    root = tmp_path_factory.mktemp("mxnet_example_v1")
    done = subprocess.run(
        [str(PEER_PYTHON), "-c", SCRIPT, json.dumps(NETS), str(root)], capture_output=True, text=True, timeout=300,
    )
    if done.returncode != 0:
        raise RuntimeError(f"MXNet failed: {done.stderr[-2000:]}")
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("name", list(NETS))
def test_example_resnet_v1_symbols_match_mxnet(example_nets: Path, name: str) -> None:
    units, filters, classes, size, bottle, extra = NETS[name]
    conversion = convert_mxnet(example_nets / f"{name}-0000.params")  # finds -symbol.json beside it
    spec = conversion.spec
    assert spec.residual == "v1" and spec.layers == tuple(units) and spec.num_classes == classes
    assert spec.block == ("bottleneck" if bottle else "basic") and spec.bn_eps == 2e-5
    assert spec.input_bn == "none"
    if size <= 32:  # conv -> BN, no ReLU, no pool: GluonCV CIFARResNetV1's stem, here in a symbol
        assert (spec.stem, spec.stem_norm, spec.stem_pool) == ("3x3", "bn", "none")
    else:
        assert (spec.stem, spec.stem_norm, spec.stem_pool) == ("7x7", "bn_relu", "max")
        if bottle:
            assert spec.stride_in == "1x1"
    x = np.load(example_nets / f"{name}-input.npy")
    assert_parity(np.load(example_nets / f"{name}-logits.npy"), logits_of(model_of(conversion), x))
    skipped = {item["source"]: item["reason"] for item in conversion.report.skipped}
    assert ("id" in skipped) == ("cast" not in extra)  # the identity on the data, spliced out and listed
    if "cast" in extra:
        assert "a dtype cast" in skipped["cast_in"] and "a dtype cast" in skipped["cast_out"]
        assert "passes its input through" in skipped["drop1"]


def test_dropout_that_stays_on_at_inference_is_refused(example_nets: Path, tmp_path: Path) -> None:
    name = "v1_basic_2111_cast_dropout"
    graph = json.loads((example_nets / f"{name}-symbol.json").read_text())
    for node in graph["nodes"]:
        if node["op"] == "Dropout":
            node.setdefault("attrs", {})["mode"] = "always"
    (tmp_path / f"{name}-symbol.json").write_text(json.dumps(graph))
    shutil.copy(example_nets / f"{name}-0000.params", tmp_path / f"{name}-0000.params")
    with pytest.raises(ConversionError, match="drop1.*mode='always'"):
        convert_mxnet(tmp_path / f"{name}-0000.params")
