"""Symbol files that differ from the fixtures in one convention each, refereed by MXNet itself (run in
the peer venv on the edited graph): the converter must read every convention from the graph."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from resnet_port.converters.mxnet import convert_mxnet, read_ndarray_file, write_ndarray_file
from tests.mxnet.conftest import assert_moves, assert_parity, logits_of, model_of, mxnet_symbol_logits

pytestmark = pytest.mark.peer


def _strip_batchnorm_defaults(graph: dict) -> None:
    """A BatchNorm without eps / fix_gamma runs with MXNet's defaults: eps 1e-3 and gamma fixed at 1."""
    for node in graph["nodes"]:
        if node["op"] == "BatchNorm":
            node.get("attrs", {}).pop("eps", None)
            node.get("attrs", {}).pop("fix_gamma", None)


def _full_pooling(graph: dict) -> None:
    """pooling_convention=full (Caffe's rounding up, pad 0)."""
    next(n for n in graph["nodes"] if n["name"] == "pooling0")["attrs"].update(pooling_convention="full", pad="(0, 0)")


def _ten_classes(graph: dict) -> None:
    for node in graph["nodes"]:
        if node["name"].startswith("fc1"):
            node.setdefault("attrs", {})["num_hidden"] = "10"


def _as_mxnet_08(graph: dict) -> None:
    """The JSON of MXNet < 0.9: operator parameters under "param", no version attribute, and no
    auxiliary-state variables (BatchNorm lists only data, gamma, beta; MXNet names the moving
    statistics NODE_moving_mean / NODE_moving_var when it upgrades the file)."""
    nodes = graph["nodes"]
    aux = {i for i, n in enumerate(nodes) if n["op"] == "null" and n["name"].endswith(("_moving_mean", "_moving_var"))}
    index, old = {}, []
    for i, node in enumerate(nodes):
        if i in aux:
            continue
        index[i] = len(old)
        inputs = [[index[e[0]], e[1]] for e in node["inputs"] if e[0] not in aux]
        old.append({"op": node["op"], "name": node["name"], "param": node.get("attrs", {}) if node["op"] != "null" else {},
                    "inputs": inputs, "backward_source_id": -1})
    arg_nodes = [index[i] for i in graph["arg_nodes"] if i not in aux]
    heads = [[index[h[0]], h[1]] for h in graph["heads"]]
    graph.clear()
    graph.update(nodes=old, arg_nodes=arg_nodes, heads=heads)


EDITS = {"defaults": _strip_batchnorm_defaults, "full_pool": _full_pooling, "ten_classes": _ten_classes, "v08": _as_mxnet_08}


@pytest.fixture(scope="module")
def variants(cache: Path, tmp_path_factory) -> dict[str, tuple[Path, Path, np.ndarray, np.ndarray]]:
    """Each edit: (symbol, params, input, the logits MXNet computes on the edited graph)."""
    tmp = tmp_path_factory.mktemp("mxnet_variants")
    folder = cache / "symbolic_resnet18"
    x = np.load(folder / "input.npy")
    jobs = {}
    for name, edit in EDITS.items():
        graph = json.loads((folder / "resnet-18-symbol.json").read_text())
        edit(graph)
        symbol = tmp / f"{name}-symbol.json"
        symbol.write_text(json.dumps(graph))
        jobs[name] = (symbol, folder / "resnet-18-0000.params", x)
    params = read_ndarray_file(folder / "resnet-18-0000.params")
    rng = np.random.default_rng(7)
    params["arg:fc1_weight"] = rng.normal(0, 0.05, (10, 512)).astype(np.float32)
    params["arg:fc1_bias"] = rng.normal(0, 0.5, (10,)).astype(np.float32)
    write_ndarray_file(tmp / "ten-0000.params", params)
    jobs["ten_classes"] = (jobs["ten_classes"][0], tmp / "ten-0000.params", x)
    logits = mxnet_symbol_logits(list(jobs.values()), tmp)
    return {name: (*job, out) for (name, job), out in zip(jobs.items(), logits)}


def _with(conversion, tensors: dict, x: np.ndarray) -> np.ndarray:
    model = model_of(conversion)
    model.load_state_dict({**model.state_dict(), **tensors})
    return logits_of(model, x)


def test_batchnorm_defaults_when_attributes_are_absent(cache: Path, variants) -> None:
    symbol, params, x, reference = variants["defaults"]
    conversion = convert_mxnet(params, symbol=symbol)
    assert conversion.spec.bn_eps == 1e-3
    assert all(bool((v == 1).all()) for k, v in conversion.state_dict.items() if k.endswith("bn1.weight"))
    assert_parity(reference, logits_of(model_of(conversion), x))
    # Wrong: Gluon's eps 1e-5; and, separately, the stored gammas honoured.
    assert_moves(reference, logits_of(model_of(conversion, conversion.spec.replace(bn_eps=1e-5)), x))
    stored = convert_mxnet(cache / "symbolic_resnet18" / "resnet-18-0000.params").state_dict
    honoured = {k: v for k, v in stored.items() if k.endswith(".weight") and k != "data_bn.weight"}
    assert_moves(reference, _with(conversion, honoured, x))


def test_full_pooling_convention_is_ceil_mode(variants) -> None:
    symbol, params, x, reference = variants["full_pool"]
    conversion = convert_mxnet(params, symbol=symbol)
    assert conversion.spec.stem_pool == "max_ceil"
    assert_parity(reference, logits_of(model_of(conversion), x))
    assert_moves(reference, logits_of(model_of(conversion, conversion.spec.replace(stem_pool="max")), x))


def test_other_class_count(variants) -> None:
    symbol, params, x, reference = variants["ten_classes"]
    conversion = convert_mxnet(params, symbol=symbol)
    assert conversion.spec.num_classes == 10 and conversion.metadata.arch == "mxnet_resnet18"
    assert_parity(reference, logits_of(model_of(conversion), x))


def test_symbol_json_of_mxnet_08(variants) -> None:
    """The old model zoo's symbol files predate MXNet 0.9; MXNet 1.9.1 upgrades them on load."""
    symbol, params, x, reference = variants["v08"]
    assert '"param"' in symbol.read_text() and "moving_mean" not in symbol.read_text()
    conversion = convert_mxnet(params, symbol=symbol)
    assert conversion.metadata.arch == "mxnet_resnet18"
    assert_parity(reference, logits_of(model_of(conversion), x))
