"""The registry of fuzzed readers: each a name, the function that reads a path, the suffix its
files carry, and a seed function that writes valid files for the mutations to start from.

Register a new reader with `@fuzz_target`; `test_fuzz_readers.py` picks it up.  Seeds are made here
by the toolkit's own writers or by the real libraries (torch, safetensors, onnx), small so that
thousands of mutations fit in a few seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from tests.audit.pairs import random_state_dict, small_spec, torch_prep


@dataclass(frozen=True)
class FuzzTarget:
    name: str
    read: Callable[[Path], Any]
    seeds: Callable[[Path], list[bytes]]
    suffix: str
    known_crash: str | None = None  # a crash found and reported, not yet fixed by the reader's owner


FUZZ_TARGETS: dict[str, FuzzTarget] = {}


def fuzz_target(name: str, read: Callable[[Path], Any], suffix: str, known_crash: str | None = None):
    def register(seeds: Callable[[Path], list[bytes]]) -> Callable[[Path], list[bytes]]:
        if name in FUZZ_TARGETS:
            raise RuntimeError(f"fuzz target {name} registered twice")
        FUZZ_TARGETS[name] = FuzzTarget(name, read, seeds, suffix, known_crash)
        return seeds

    return register


# A reader with a crash found here and not yet fixed by its owner gets known_crash="what and the fix":
# its test is then an expected failure, never a pass.  (The Caffe readers' DecodeError and h5py
# errors found this way were fixed in 2b5bea7 / 45ffcd0.)


def _tiny_state(arch: str = "resnet18", seed: int = 0):
    spec = small_spec(arch, widths=(4, 4, 8, 8), stem_width=4, num_classes=3)
    return spec, random_state_dict(spec, seed)


def _read_raw(path: Path) -> Any:
    from resnet_port.checkpoints import read_raw

    return read_raw(path)


@fuzz_target("checkpoints.read_raw", _read_raw, ".pth")
def checkpoint_seeds(work: Path) -> list[bytes]:
    """A toolkit .pth and .safetensors, a plain state_dict (zip), and a legacy (non-zip) pickle file."""
    from resnet_port.checkpoints import CheckpointMetadata, save_checkpoint

    spec, state = _tiny_state()
    meta = CheckpointMetadata(spec=spec, preprocessing=torch_prep())
    files = [save_checkpoint(work / "seed.pth", spec, state, meta), save_checkpoint(work / "seed.safetensors", spec, state, meta)]
    plain = {k: v for k, v in list(state.items())[:6]}
    torch.save({"state_dict": plain}, work / "plain.pth")
    torch.save(plain, work / "legacy.pth", _use_new_zipfile_serialization=False)
    files += [work / "plain.pth", work / "legacy.pth"]
    return [Path(f).read_bytes() for f in files]


def _load_model(path: Path) -> Any:
    from resnet_port.checkpoints import load_model

    return load_model(path)


@fuzz_target("checkpoints.load_model", _load_model, ".safetensors")
def load_model_seeds(work: Path) -> list[bytes]:
    """The whole loading path, metadata record and strict fit included."""
    from resnet_port.checkpoints import CheckpointMetadata, save_checkpoint

    spec, state = _tiny_state("resnet50")
    meta = CheckpointMetadata(spec=spec, preprocessing=torch_prep())
    return [save_checkpoint(work / "seed.safetensors", spec, state, meta).read_bytes()]


def _load_side(path: Path) -> Any:
    from resnet_port.audit import load_side

    return load_side("A", path)


@fuzz_target("audit.load_side", _load_side, ".pth")
def audit_side_seeds(work: Path) -> list[bytes]:
    """What `audit` itself reads first: kind dispatch, then the checkpoint path with its metadata."""
    return load_model_seeds(work) + checkpoint_seeds(work)[:1]


def tiny_onnx(path: Path) -> Path:
    """A small reference ResNet exported by torch's ONNX exporter, BatchNorms kept as nodes."""
    from resnet_port.resnet_ref import build_model

    spec, state = _tiny_state("resnet18_v1")
    model = build_model(spec)
    model.load_state_dict({**model.state_dict(), **state})
    model.eval()
    torch.onnx.export(
        model,
        torch.zeros(1, 3, 32, 32),
        str(path),
        input_names=["data"],
        output_names=["logits"],
        dynamo=False,
        opset_version=13,
        training=torch.onnx.TrainingMode.PRESERVE,  # keep BatchNorm nodes (eval export folds them)
        do_constant_folding=False,
    )
    return path


def _convert_onnx(path: Path) -> Any:
    from resnet_port.converters.onnx import convert_onnx

    return convert_onnx(path)


@fuzz_target("converters.onnx.convert_onnx", _convert_onnx, ".onnx")
def onnx_seeds(work: Path) -> list[bytes]:
    return [tiny_onnx(work / "seed.onnx").read_bytes()]


# -- Caffe ----------------------------------------------------------------------------------------
def _tiny_caffe(work: Path) -> dict[str, Path]:
    """A small Caffe ResNet in the release's naming (tests/caffe/netgen), written by the toolkit's
    Caffe writers: prototxt, caffemodel, HDF5 snapshot and a mean binaryproto."""
    import numpy as np

    from resnet_port.converters.caffe import parse_prototxt, write_binaryproto, write_caffemodel, write_caffemodel_h5
    from tests.caffe.netgen import resnet_prototxt, weights_for

    text = resnet_prototxt(widths=(2, 4, 4, 8), stem_width=4, input_size=32, classes=3)
    net = parse_prototxt(text)
    blobs = weights_for(net, seed=1)
    files = {
        "prototxt": work / "deploy.prototxt",
        "model": work / "tiny.caffemodel",
        "h5": work / "tiny.caffemodel.h5",
        "mean": work / "mean.binaryproto",
    }
    files["prototxt"].write_text(text)
    write_caffemodel(files["model"], net, blobs)
    write_caffemodel_h5(files["h5"], blobs)
    write_binaryproto(files["mean"], np.random.default_rng(0).random((3, 8, 8), dtype=np.float32) * 255)
    return files


def _read_prototxt(path: Path) -> Any:
    from resnet_port.converters.caffe import read_prototxt

    return read_prototxt(path)


@fuzz_target("converters.caffe.read_prototxt", _read_prototxt, ".prototxt")
def prototxt_seeds(work: Path) -> list[bytes]:
    from tests.caffe.conftest import CAFFE_REF

    return [_tiny_caffe(work)["prototxt"].read_bytes(), (CAFFE_REF / "ResNet-50-deploy.prototxt").read_bytes()]


def _read_caffemodel(path: Path) -> Any:
    from resnet_port.converters.caffe import read_caffemodel

    return read_caffemodel(path)


@fuzz_target("converters.caffe.read_caffemodel", _read_caffemodel, ".caffemodel")
def caffemodel_seeds(work: Path) -> list[bytes]:
    return [_tiny_caffe(work)["model"].read_bytes()]


def _read_caffemodel_h5(path: Path) -> Any:
    from resnet_port.converters.caffe import read_caffemodel_h5

    return read_caffemodel_h5(path)


@fuzz_target("converters.caffe.read_caffemodel_h5", _read_caffemodel_h5, ".caffemodel.h5")
def caffemodel_h5_seeds(work: Path) -> list[bytes]:
    return [_tiny_caffe(work)["h5"].read_bytes()]


def _read_binaryproto(path: Path) -> Any:
    from resnet_port.converters.caffe import read_binaryproto

    return read_binaryproto(path)


@fuzz_target("converters.caffe.read_binaryproto", _read_binaryproto, ".binaryproto")
def binaryproto_seeds(work: Path) -> list[bytes]:
    return [_tiny_caffe(work)["mean"].read_bytes()]


def _convert_caffe(path: Path) -> Any:
    from resnet_port.converters.caffe import convert_caffe

    return convert_caffe(path)


@fuzz_target("converters.caffe.convert_caffe", _convert_caffe, ".caffemodel")
def convert_caffe_seeds(work: Path) -> list[bytes]:
    return [_tiny_caffe(work)["model"].read_bytes()]


# -- MXNet ----------------------------------------------------------------------------------------
def _read_ndarray_file(path: Path) -> Any:
    from resnet_port.converters.mxnet import read_ndarray_file

    return read_ndarray_file(path)


def _ndarray_seeds(work: Path) -> list[bytes]:
    """Named and unnamed NDArray files of several dtypes and ranks, written by the toolkit's writer
    (the format of PEERS.md), plus a real Gluon file's head when the peer cache has one."""
    import numpy as np

    from resnet_port.converters.mxnet import write_ndarray_file

    rng = np.random.default_rng(0)
    named = {
        "features.0.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "features.1.gamma": rng.standard_normal(4).astype(np.float32),
        "output.bias": rng.standard_normal(3).astype(np.float64),
        "counts": np.arange(6, dtype=np.int64).reshape(2, 3),
        "half": rng.standard_normal((2, 2)).astype(np.float16),
    }
    write_ndarray_file(work / "named.params", named)
    write_ndarray_file(work / "unnamed.params", [np.ones((2, 2), np.float32), np.zeros(3, np.uint8)])
    return [(work / "named.params").read_bytes(), (work / "unnamed.params").read_bytes()]


@fuzz_target("converters.mxnet.read_ndarray_file", _read_ndarray_file, ".params")
def ndarray_seeds(work: Path) -> list[bytes]:
    return _ndarray_seeds(work)


def _convert_mxnet(path: Path) -> Any:
    from resnet_port.converters.mxnet import convert_mxnet

    return convert_mxnet(path)


_GLUON_V1_BODY = {"conv1": "body.0", "bn1": "body.1", "conv2": "body.3", "bn2": "body.4"}
_GLUON_BN = {"weight": "gamma", "bias": "beta", "running_mean": "running_mean", "running_var": "running_var"}


def gluon_v1_name(key: str) -> str:
    """Gluon ResNet V1 (basic blocks) ``save_parameters`` name of a reference key, written out here
    from Gluon's layout (features.0 conv, .1 BN, stages from features.4, ``output`` dense)."""
    parts = key.split(".")
    if parts[0] == "conv1":
        return "features.0.weight"
    if parts[0] == "bn1":
        return f"features.1.{_GLUON_BN[parts[1]]}"
    if parts[0] == "fc":
        return f"output.{parts[1]}"
    stage, block, module = int(parts[0][len("layer"):]), parts[1], parts[2]
    prefix = f"features.{stage + 3}.{block}"
    if module == "downsample":
        leaf = parts[4] if parts[3] == "0" else _GLUON_BN[parts[4]]
        return f"{prefix}.downsample.{parts[3]}.{leaf}"
    leaf = parts[3] if module.startswith("conv") else _GLUON_BN[parts[3]]
    return f"{prefix}.{_GLUON_V1_BODY[module]}.{leaf}"


@fuzz_target("converters.mxnet.convert_mxnet", _convert_mxnet, ".params")
def convert_mxnet_seeds(work: Path) -> list[bytes]:
    """A small Gluon ResNet-18 V1 in Gluon's structural names, so that the mutations reach the
    converter's name and shape checks, not only the file reader."""
    from resnet_port.converters.mxnet import write_ndarray_file

    _, state = _tiny_state("resnet18_v1")
    params = {gluon_v1_name(k): v.numpy() for k, v in state.items() if not k.endswith("num_batches_tracked")}
    write_ndarray_file(work / "gluon.params", params)
    return [(work / "gluon.params").read_bytes()]


def _read_symbol_json(path: Path) -> Any:
    from resnet_port.converters.mxnet.symbol import read_symbol_json

    return read_symbol_json(path)


TINY_SYMBOL = {
    "nodes": [
        {"op": "null", "name": "data", "inputs": []},
        {"op": "null", "name": "bn_data_gamma", "attrs": {"__init__": "[\"one\", {}]"}, "inputs": []},
        {"op": "null", "name": "bn_data_beta", "inputs": []},
        {"op": "null", "name": "bn_data_moving_mean", "inputs": []},
        {"op": "null", "name": "bn_data_moving_var", "inputs": []},
        {"op": "BatchNorm", "name": "bn_data", "attrs": {"eps": "2e-05", "fix_gamma": "True"}, "inputs": [[0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 1], [4, 0, 1]]},
        {"op": "null", "name": "conv0_weight", "inputs": []},
        {"op": "Convolution", "name": "conv0", "attrs": {"kernel": "(7, 7)", "no_bias": "True", "num_filter": "4", "pad": "(3, 3)", "stride": "(2, 2)"}, "inputs": [[5, 0, 0], [6, 0, 0]]},
        {"op": "Activation", "name": "relu0", "attrs": {"act_type": "relu"}, "inputs": [[7, 0, 0]]},
        {"op": "Pooling", "name": "pool1", "attrs": {"global_pool": "True", "kernel": "(7, 7)", "pool_type": "avg"}, "inputs": [[8, 0, 0]]},
        {"op": "Flatten", "name": "flatten0", "inputs": [[9, 0, 0]]},
        {"op": "null", "name": "fc1_weight", "inputs": []},
        {"op": "null", "name": "fc1_bias", "inputs": []},
        {"op": "FullyConnected", "name": "fc1", "attrs": {"num_hidden": "3"}, "inputs": [[10, 0, 0], [11, 0, 0], [12, 0, 0]]},
    ],
    "arg_nodes": [0, 1, 2, 3, 4, 6, 11, 12],
    "heads": [[13, 0, 0]],
    "attrs": {"mxnet_version": ["int", 10901]},
}


@fuzz_target("converters.mxnet.read_symbol_json", _read_symbol_json, "-symbol.json")
def symbol_seeds(work: Path) -> list[bytes]:
    """A small symbol graph in MXNet's JSON layout, and a real one written by MXNet when the peer
    fixture cache holds it (it is not generated here: that takes minutes)."""
    import json

    from tests.peers.mxnet_cache import CACHE_ROOT

    seeds = [json.dumps(TINY_SYMBOL, indent=2).encode()]
    real = CACHE_ROOT / "symbolic_resnet18" / "resnet-18-symbol.json"
    if real.is_file():
        seeds.append(real.read_bytes())
    return seeds
