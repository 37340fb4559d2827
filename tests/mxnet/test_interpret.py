"""convert-mxnet's referees against the real MXNet: the symbol evaluator (interpret.py) and the Gluon
graph (gluon_graph.py) must reproduce the logits MXNet 1.9.1 computed on the cached fixtures, and the
MXNet conventions they claim (fix_gamma, default eps, full pooling, MXNet < 0.9 files) on graphs
edited here and run by MXNet itself."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from resnet_port.converters.mxnet import read_ndarray_file, write_ndarray_file
from resnet_port.converters.mxnet.gluon_graph import GluonLayoutError, run_gluon
from resnet_port.converters.mxnet.interpret import run_symbol
from resnet_port.converters.mxnet.symbol import read_symbol_json
from resnet_port.errors import ConversionError
from tests.mxnet.conftest import assert_moves, mxnet_symbol_logits, rel_diff
from tests.mxnet.test_symbol_variants import EDITS

# float64 evaluation against MXNet's float32: what float32 rounding leaves, far under PARITY_RTOL.
REFEREE_RTOL = 1e-5
QUICK = ["gluon_resnet18_v1", "gluon_resnet18_v2", "gluon_resnet50_v1", "gluon_resnet50_v2"]
SLOW = [f"gluon_resnet{d}_v{v}" for v in (1, 2) for d in (34, 101, 152)]
SYMBOLIC = {18: False, 34: True, 50: False, 101: True, 152: True}  # depth: slow


def _case(name: str, slow: bool):
    return pytest.param(name, marks=[pytest.mark.slow] if slow else [])


def _check(reference: np.ndarray, ours: np.ndarray) -> None:
    assert ours.shape == reference.shape
    assert rel_diff(reference, ours) <= REFEREE_RTOL, rel_diff(reference, ours)
    assert (reference.argmax(1) == ours.argmax(1)).all()


@pytest.mark.parametrize("name", [_case(n, False) for n in QUICK] + [_case(n, True) for n in SLOW])
def test_symbol_evaluator_reproduces_mxnet_on_gluon_exports(cache: Path, name: str) -> None:
    folder = cache / name
    ours = run_symbol(read_symbol_json(folder / "export-symbol.json"), read_ndarray_file(folder / "export-0000.params"), np.load(folder / "input.npy"))
    _check(np.load(folder / "logits_mxnet.npy"), ours)


@pytest.mark.parametrize("depth", [pytest.param(d, marks=[pytest.mark.slow] if s else []) for d, s in SYMBOLIC.items()])
def test_symbol_evaluator_reproduces_mxnet_on_symbolic_models(cache: Path, depth: int) -> None:
    folder = cache / f"symbolic_resnet{depth}"
    graph = read_symbol_json(folder / f"resnet-{depth}-symbol.json")
    assert graph.node(graph.heads[0]).op == "SoftmaxOutput"  # the referee returns the logits under it
    ours = run_symbol(graph, read_ndarray_file(folder / f"resnet-{depth}-0000.params"), np.load(folder / "input.npy"))
    _check(np.load(folder / "logits_mxnet.npy"), ours)


@pytest.mark.parametrize("name", [_case(n, False) for n in QUICK] + [_case(n, True) for n in SLOW])
def test_gluon_graph_reproduces_mxnet_on_save_parameters_files(cache: Path, name: str) -> None:
    folder = cache / name
    _check(np.load(folder / "logits_mxnet.npy"), run_gluon(read_ndarray_file(folder / "model.params"), np.load(folder / "input.npy")))


@pytest.mark.parametrize("variant", ["datagamma", "databeta"])
def test_gluon_graph_input_bn_as_mxnet_runs_it(cache: Path, variant: str) -> None:
    """V2's input BN: a stored gamma is ignored (fix_gamma), a stored beta is used: as MXNet computed."""
    folder = cache / "gluon_resnet18_v2"
    reference = np.load(folder / f"logits_mxnet_variant_{variant}.npy")
    ours = run_gluon(read_ndarray_file(folder / f"variant_{variant}.params"), np.load(folder / "input.npy"))
    _check(reference, ours)
    if variant == "databeta":  # the beta really moves the output: a referee that dropped it would fail
        assert_moves(reference, np.load(folder / "logits_mxnet.npy"), factor=1.0)


def test_symbol_fix_gamma_ignores_the_stored_gamma(cache: Path, tmp_path: Path) -> None:
    """bn_data has fix_gamma=True: scaling its stored gamma must not move MXNet's logits; honouring
    the gamma (fix_gamma=False) must."""
    folder = cache / "symbolic_resnet18"
    x, reference = np.load(folder / "input.npy"), np.load(folder / "logits_mxnet.npy")
    params = read_ndarray_file(folder / "resnet-18-0000.params")
    params["arg:bn_data_gamma"] = np.array([0.5, 2.0, 3.0], np.float32)
    graph = json.loads((folder / "resnet-18-symbol.json").read_text())
    path = folder / "resnet-18-symbol.json"
    _check(reference, run_symbol(read_symbol_json(path), params, x))
    next(n for n in graph["nodes"] if n["name"] == "bn_data")["attrs"]["fix_gamma"] = "False"
    edited = tmp_path / "s-symbol.json"
    edited.write_text(json.dumps(graph))
    assert_moves(reference, run_symbol(read_symbol_json(edited), params, x))


@pytest.fixture(scope="module")
def edited(cache: Path, tmp_path_factory) -> dict[str, tuple[Path, Path, np.ndarray, np.ndarray]]:
    """The graphs of test_symbol_variants (defaults, full pooling, 10 classes, MXNet 0.8 JSON) plus a
    small net of the less common operators, each run by the real MXNet."""
    tmp = tmp_path_factory.mktemp("referee_variants")
    folder = cache / "symbolic_resnet18"
    x = np.load(folder / "input.npy")
    jobs = {}
    for name, edit in EDITS.items():
        if name == "ten_classes":
            continue
        graph = json.loads((folder / "resnet-18-symbol.json").read_text())
        edit(graph)
        symbol = tmp / f"{name}-symbol.json"
        symbol.write_text(json.dumps(graph))
        jobs[name] = (symbol, folder / "resnet-18-0000.params", x)
    jobs["operators"] = _operator_net(tmp)
    logits = mxnet_symbol_logits(list(jobs.values()), tmp)
    return {name: (*job, out) for (name, job), out in zip(jobs.items(), logits)}


def _operator_net(tmp: Path) -> tuple[Path, Path, np.ndarray]:
    """Grouped dilated conv with bias, avg pooling full/ceil with and without the padding counted,
    max pooling full, leaky ReLU, scalar ops, Dropout and a non-flattening path to FullyConnected."""
    def var(name):
        return {"op": "null", "name": name, "inputs": []}

    nodes = [var("data"), var("c_weight"), var("c_bias")]
    def op(kind, name, attrs, inputs):
        nodes.append({"op": kind, "name": name, "attrs": attrs, "inputs": [[i, 0, 0] for i in inputs]})
        return len(nodes) - 1
    conv = op("Convolution", "c", {"kernel": "(3, 3)", "stride": "(2, 2)", "pad": "(2, 2)", "dilate": "(2, 2)", "num_filter": "6", "num_group": "3"}, [0, 1, 2])
    p1 = op("Pooling", "p1", {"kernel": "(3, 3)", "stride": "(2, 2)", "pad": "(1, 1)", "pool_type": "avg", "pooling_convention": "full"}, [conv])
    p2 = op("Pooling", "p2", {"kernel": "(3, 3)", "stride": "(2, 2)", "pad": "(1, 1)", "pool_type": "avg", "pooling_convention": "full", "count_include_pad": "False"}, [p1])
    p3 = op("Pooling", "p3", {"kernel": "(2, 2)", "stride": "(2, 2)", "pool_type": "max", "pooling_convention": "full"}, [p2])
    act = op("LeakyReLU", "lr", {"act_type": "leaky", "slope": "0.1"}, [p3])
    sc = op("_mul_scalar", "ms", {"scalar": "1.5"}, [act])
    sc = op("_plus_scalar", "ps", {"scalar": "-0.25"}, [sc])
    drop = op("Dropout", "dr", {"p": "0.5"}, [sc])
    nodes.extend([var("fc1_weight"), var("fc1_bias")])
    op("FullyConnected", "fc1", {"num_hidden": "7"}, [drop, len(nodes) - 2, len(nodes) - 1])
    graph = {"nodes": nodes, "arg_nodes": [i for i, n in enumerate(nodes) if n["op"] == "null"], "heads": [[len(nodes) - 1, 0, 0]],
             "attrs": {"mxnet_version": ["int", 10901]}}
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 6, 37, 29)).astype(np.float32)
    side = (37 + 4 - 5) // 2 + 1, (29 + 4 - 5) // 2 + 1  # conv output 19 x 15
    h = [-(-(s + 2 - 3) // 2) + 1 for s in side]  # p1 full: 10 x 8
    h = [-(-(s + 2 - 3) // 2) + 1 for s in h]  # p2 full: 6 x 5
    h = [-(-(s - 2) // 2) + 1 for s in h]  # p3 full: 3 x 3
    params = {
        "arg:c_weight": rng.normal(0, 0.3, (6, 2, 3, 3)).astype(np.float32),
        "arg:c_bias": rng.normal(0, 0.5, (6,)).astype(np.float32),
        "arg:fc1_weight": rng.normal(0, 0.2, (7, 6 * h[0] * h[1])).astype(np.float32),
        "arg:fc1_bias": rng.normal(0, 0.2, (7,)).astype(np.float32),
    }
    symbol, weights = tmp / "ops-symbol.json", tmp / "ops-0000.params"
    symbol.write_text(json.dumps(graph))
    write_ndarray_file(weights, params)
    return symbol, weights, x


@pytest.mark.peer
@pytest.mark.parametrize("name", ["defaults", "full_pool", "v08", "operators"])
def test_symbol_evaluator_follows_mxnet_conventions(edited, name: str) -> None:
    symbol, params, x, reference = edited[name]
    _check(reference, run_symbol(read_symbol_json(symbol), read_ndarray_file(params), x))


def test_unknown_operator_is_named(cache: Path, tmp_path: Path) -> None:
    folder = cache / "symbolic_resnet18"
    graph = json.loads((folder / "resnet-18-symbol.json").read_text())
    next(n for n in graph["nodes"] if n["name"] == "relu0")["op"] = "Swish"
    path = tmp_path / "s-symbol.json"
    path.write_text(json.dumps(graph))
    with pytest.raises(ConversionError, match="'relu0'.*'Swish'"):
        run_symbol(read_symbol_json(path), read_ndarray_file(folder / "resnet-18-0000.params"), np.load(folder / "input.npy"))


def test_gluon_graph_refuses_other_layouts(cache: Path) -> None:
    params = read_ndarray_file(cache / "gluon_resnet18_v1" / "model.params")
    params["features.4.0.body.9.weight"] = np.zeros((1,), np.float32)  # not a Gluon model-zoo tensor
    with pytest.raises(GluonLayoutError, match=r"features\.4\.0\.body\.9\.weight"):
        run_gluon(params, np.zeros((1, 3, 64, 64), np.float32))
    with pytest.raises(GluonLayoutError, match="neither"):
        run_gluon({"conv.weight": np.zeros((1, 3, 1, 1), np.float32)}, np.zeros((1, 3, 8, 8), np.float32))


def test_referees_do_not_use_the_converters_mapping() -> None:
    """Independence: the referees import the file readers and the errors, nothing of the converter's
    recogniser, op mapping, spec or reference model."""
    import ast

    import resnet_port.converters.mxnet.gluon_graph as gluon_graph
    import resnet_port.converters.mxnet.interpret as interpret

    allowed = {"resnet_port.converters.mxnet.symbol", "resnet_port.errors"}
    for module in (interpret, gluon_graph):
        tree = ast.parse(Path(module.__file__).read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        ours = {m for m in imported if m.startswith("resnet_port")}
        assert ours <= allowed, f"{module.__name__} imports {sorted(ours - allowed)}"


from tests.mxnet.test_gluon_layouts import LAYOUTS, gluon_layouts  # noqa: E402,F401 - Gluon-built files, module fixture


@pytest.mark.peer
@pytest.mark.parametrize("name", list(LAYOUTS))
@pytest.mark.parametrize("form", ["save_parameters", "export", "save_params"])
def test_convert_mxnet_referee_on_other_gluon_layouts(gluon_layouts: Path, name: str, form: str) -> None:  # noqa: F811
    """The referee convert-mxnet picks for each file form (Gluon graph for save_parameters and the
    translated save_params names, the symbol for export) reproduces Gluon on stage counts, class
    counts and sizes beyond the model zoo's."""
    from resnet_port.converters.mxnet import convert_mxnet
    from resnet_port.converters.mxnet.verify import mxnet_referee

    path = gluon_layouts / {"save_parameters": f"{name}.params", "save_params": f"{name}-legacy.params",
                            "export": f"{name}-export-0000.params"}[form]
    referee = mxnet_referee(convert_mxnet(path), path)
    assert ("symbol graph" in referee.name) == (form == "export")
    x = np.load(gluon_layouts / f"{name}-input.npy")
    _check(np.load(gluon_layouts / f"{name}-logits.npy"), referee.logits(x))
