"""Fixtures of the convert-onnx tests: ResNets written node by node with onnx.helper, refereed by onnxruntime.

`build_resnet_onnx` is written separately from the converter and shares nothing with it: it lays
out Gluon's ResNet V1 (post-activation, stride in the first 1x1 of a bottleneck, biases on the 1x1
body convs) and V2 (input BN, pre-activation, projection from the pre-activated tensor, final
BN-ReLU) as MXNet's exporter does, with options for each thing the converter must honour (eps per
node, conv biases, stride position, the input BN's stored gamma, classifier forms).  Every BN gets
non-trivial statistics, gamma and beta so that mapping any of them wrongly moves the logits.  The
reference logits come from onnxruntime running the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

# Plain imports, not importorskip: the test extra installs both, and a missing referee must fail.
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from resnet_port.converters.onnx.cli import main as convert_onnx_cli  # noqa: E402
from tests.peers.mxnet_cache import mxnet_fixtures  # noqa: E402,F401 - the MXNet-exported ONNX files

BLOCKS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
TOLERANCE = 1e-4  # max |diff| relative to the largest logit, as the issue states


@dataclass
class OnnxNet:
    """A written ONNX file, the input it was run on and what onnxruntime computed."""

    path: Path
    x: np.ndarray
    logits: np.ndarray | None
    bn_names: list[str] = field(default_factory=list)  # BatchNormalization node names, in order
    conv_names: list[str] = field(default_factory=list)


class Graph:
    """Nodes and initializers collected in order; names follow MXNet's (some nodes unnamed)."""

    def __init__(
        self, rng: np.random.Generator, eps: Callable[[int], float], var_range: tuple[float, float], opset: int = 17
    ) -> None:
        self.opset = opset
        self.rng = rng
        self.eps = eps
        self.var_range = var_range
        self.nodes: list = []
        self.inits: list = []
        self.count = 0
        self.bn_names: list[str] = []
        self.conv_names: list[str] = []

    def name(self, kind: str) -> str:
        self.count += 1
        return f"{kind}{self.count}"

    def init(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def add(self, op: str, inputs: list[str], name: str = "", **attrs) -> str:
        out = (name or self.name(op.lower())) + "_out"
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int, bias: bool = False, group: int = 1) -> str:
        name = self.name("conv")
        fan_in = cin // group * k * k
        w = self.init(
            f"{name}_weight",
            (self.rng.standard_normal((cout, cin // group, k, k)) * np.sqrt(2.0 / fan_in)).astype(np.float32),
        )
        inputs = [x, w]
        if bias:
            inputs.append(self.init(f"{name}_bias", self.rng.uniform(-0.3, 0.3, cout).astype(np.float32)))
        self.conv_names.append(name)
        # MXNet's exporter leaves Conv nodes unnamed: the converter must not need names.
        return self.add(
            "Conv",
            inputs,
            "",
            kernel_shape=[k, k],
            strides=[stride, stride],
            pads=[k // 2] * 4,
            dilations=[1, 1],
            group=group,
        )

    def bn(self, x: str, c: int, gamma: np.ndarray | None = None, beta: np.ndarray | None = None) -> str:
        name = self.name("batchnorm")
        r = self.rng
        var = r.uniform(*self.var_range, c)
        # gamma ~ sqrt(var) keeps activations of order 1 even where the variances are tiny.
        g = r.uniform(0.5, 1.5, c) * np.sqrt(var) if gamma is None else gamma
        b = r.uniform(-0.2, 0.2, c) if beta is None else beta
        inputs = [x] + [
            self.init(f"{name}_{field}", np.asarray(v, dtype=np.float32))
            for field, v in (("gamma", g), ("beta", b), ("running_mean", r.uniform(-0.2, 0.2, c)), ("running_var", var))
        ]
        eps = self.eps(len(self.bn_names))
        self.bn_names.append(name)
        # Opsets 7-8 (the ONNX zoo's files) still carry `spatial`; the regenerated zoo files write 1.
        extra = {"spatial": 1} if self.opset < 9 else {}
        return self.add("BatchNormalization", inputs, name, epsilon=eps, momentum=0.9, **extra)

    def relu(self, x: str) -> str:
        return self.add("Relu", [x], self.name("relu"))


def build_resnet_onnx(
    path: Path,
    depth: int = 18,
    residual: str = "v1",
    widths: tuple[int, ...] = (4, 8, 8, 16),
    stem_width: int = 8,
    num_classes: int = 10,
    size: int = 32,
    batch: int = 2,
    seed: int = 0,
    stride_in: str | None = None,
    bias_roles: tuple[str, ...] | None = None,
    eps: float | Callable[[int], float] = 1e-5,
    var_range: tuple[float, float] = (0.5, 2.0),
    data_gamma: np.ndarray | None = None,
    data_beta: np.ndarray | None = None,
    stem_pool: str = "max",
    projection: str = "when_needed",
    classifier: str = "gemm",
    flatten: str = "flatten",
    opset: int = 17,
    mutate: Callable[[list, list], None] | None = None,
    run: bool = True,
    dynamic: bool = False,
) -> OnnxNet:
    """Write an ONNX ResNet laid out as Gluon's (and so the ONNX zoo's), run it, return the logits."""
    rng = np.random.default_rng(seed)
    kind, layers = BLOCKS[depth]
    stride_in = stride_in or ("1x1" if residual == "v1" else "3x3")
    if bias_roles is None:
        bias_roles = ("conv1", "conv3") if residual == "v1" and kind == "bottleneck" else ()
    g = Graph(rng, eps if callable(eps) else (lambda i: eps), var_range, opset)
    x = "data"
    if residual == "v2":
        ones, zeros = np.ones(3, np.float32), np.zeros(3, np.float32)
        x = g.bn(x, 3, ones if data_gamma is None else data_gamma, zeros if data_beta is None else data_beta)
    x = g.relu(g.bn(g.conv(x, 3, stem_width, 7, 2, bias="stem" in bias_roles), stem_width))
    if stem_pool == "max":
        floor = {"ceil_mode": 0} if opset >= 10 else {}  # ceil_mode exists from opset 10
        x = g.add("MaxPool", [x], "pool0", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], **floor)
    else:
        x = g.add("MaxPool", [x], "pool0", kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, 0, 0], ceil_mode=1)
    cin = stem_width
    expansion = 4 if kind == "bottleneck" else 1
    for s, (planes, count) in enumerate(zip(widths, layers)):
        for b in range(count):
            stride = 2 if s > 0 and b == 0 else 1
            out = planes * expansion
            project = stride != 1 or cin != out or (projection == "first_of_stage" and b == 0)
            x = _block(g, x, cin, planes, out, stride, kind, residual, stride_in, bias_roles, project)
            cin = out
    if residual == "v2":
        x = g.relu(g.bn(x, cin))
    x = g.add("GlobalAveragePool", [x], "pool1")
    if flatten == "flatten":
        x = g.add("Flatten", [x], "flatten0", axis=1)
    elif flatten == "reshape":
        x = g.add("Reshape", [x, g.init("flat_shape", np.array([0, -1], np.int64))], "reshape0")
    else:  # the target shape from a Constant node, as some exporters write it
        shape = helper.make_tensor("shape_value", TensorProto.INT64, [2], [0, -1])
        g.nodes.append(helper.make_node("Constant", [], ["flat_shape"], name="shape0", value=shape))
        x = g.add("Reshape", [x, "flat_shape"], "reshape0")
    w = (rng.standard_normal((num_classes, cin)) / np.sqrt(cin)).astype(np.float32)
    bias = rng.uniform(-0.5, 0.5, num_classes).astype(np.float32)
    if classifier == "gemm":
        x = g.add("Gemm", [x, g.init("fc_weight", w), g.init("fc_bias", bias)], "dense0", transB=1, alpha=1.0, beta=1.0)
    elif classifier == "gemm_transposed_scaled":
        # (in, out) weight, alpha 0.5 / beta 2: the same logits only if both are honoured.
        x = g.add(
            "Gemm",
            [x, g.init("fc_weight", 2 * w.T), g.init("fc_bias", bias / 2)],
            "dense0",
            transB=0,
            alpha=0.5,
            beta=2.0,
        )
    elif classifier == "matmul_add":
        x = g.add("MatMul", [x, g.init("fc_weight", w.T.copy())], "dense0")
        x = g.add("Add", [x, g.init("fc_bias", bias)], "dense0_bias")
    else:
        raise ValueError(classifier)
    x = g.add("Identity", [x], "output")
    nodes, inits = g.nodes, g.inits
    if mutate is not None:
        mutate(nodes, inits)
    graph = helper.make_graph(
        nodes,
        "resnet",
        # dynamic: batch and image size left symbolic, as many exporters leave them.
        [
            helper.make_tensor_value_info(
                "data", TensorProto.FLOAT, ["N", 3, "H", "W"] if dynamic else [batch, 3, size, size]
            )
        ],
        [
            helper.make_tensor_value_info(
                nodes[-1].output[0], TensorProto.FLOAT, ["N" if dynamic else batch, num_classes]
            )
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    inp = np.random.default_rng(seed + 1).standard_normal((batch, 3, size, size)).astype(np.float32)
    # run=False: graphs made only to be refused, which onnxruntime may not load either.
    return OnnxNet(path, inp, run_onnxruntime(path, inp) if run else None, g.bn_names, g.conv_names)


def _block(
    g: Graph,
    x: str,
    cin: int,
    planes: int,
    out: int,
    stride: int,
    kind: str,
    residual: str,
    stride_in: str,
    bias_roles: tuple[str, ...],
    project: bool,
) -> str:
    if kind == "bottleneck":
        s1, s2 = (stride, 1) if stride_in == "1x1" else (1, stride)
        convs = [(cin, planes, 1, s1), (planes, planes, 3, s2), (planes, out, 1, 1)]
    else:
        convs = [(cin, planes, 3, stride), (planes, out, 3, 1)]
    if residual == "v1":
        y = x
        for i, (ci, co, k, s) in enumerate(convs, 1):
            y = g.bn(g.conv(y, ci, co, k, s, bias=f"conv{i}" in bias_roles), co)
            if i < len(convs):
                y = g.relu(y)
        shortcut = g.bn(g.conv(x, cin, out, 1, stride, bias="downsample" in bias_roles), out) if project else x
        return g.relu(g.add("Add", [shortcut, y], g.name("plus")))
    a = g.relu(g.bn(x, cin))
    shortcut = g.conv(a, cin, out, 1, stride, bias="downsample" in bias_roles) if project else x
    y = a
    for i, (ci, co, k, s) in enumerate(convs, 1):
        if i > 1:
            y = g.relu(g.bn(y, ci))
        y = g.conv(y, ci, co, k, s, bias=f"conv{i}" in bias_roles)
    return g.add("Add", [y, shortcut], g.name("plus"))


def run_onnxruntime(path: Path, x: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def rel_diff(reference: np.ndarray, ours) -> float:
    ours = np.asarray(ours.detach() if hasattr(ours, "detach") else ours, dtype=np.float64)
    return float(np.abs(reference - ours).max() / np.abs(reference).max())


@pytest.fixture
def build(tmp_path):
    """``build(name, **options)`` writes ``tmp_path/name.onnx`` with `build_resnet_onnx`."""

    def make(name: str = "net", **options) -> OnnxNet:
        return build_resnet_onnx(tmp_path / f"{name}.onnx", **options)

    return make


def seed_batchnorms(model, seed: int, skip_prefix: str = "") -> None:
    """Give every BatchNorm of ``model`` seeded, non-trivial statistics (and gamma/beta where it has
    them), so that a BN mapped wrongly, or a fold ignored, moves the logits.  BNs whose name starts with
    ``skip_prefix`` keep their initial values."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.BatchNorm2d) and not (skip_prefix and name.startswith(skip_prefix)):
            c = module.num_features
            with torch.no_grad():
                if module.affine:
                    module.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                    module.bias.copy_(torch.rand(c, generator=gen) * 0.4 - 0.2)
                module.running_mean.copy_(torch.rand(c, generator=gen) * 0.4 - 0.2)
                module.running_var.copy_(torch.rand(c, generator=gen) * 1.5 + 0.5)


def refuse(path, tmp_path, capsys, *fragments: str) -> str:
    """Run the CLI on ``path``: exit 2, one line on stderr containing ``fragments``, no output file."""
    out = tmp_path / "out.pth"
    assert convert_onnx_cli([str(path), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert str(path) in err
    for fragment in fragments:
        assert fragment in err, err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("out")]  # no temp file left either
    return err
