"""Training checkpoints as torchvision's train.py, timm's train.py and mmengine write them load
without running any of their code: the weights come from the right entry (the EMA ones with
``ema=True`` / ``--ema``), foreign objects become inert stand-ins, numpy values come back as numpy
values, and the model gives the independent builders' forward."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections import OrderedDict

import numpy as np
import pytest
import torch

from resnet_port.checkpoints import load_model, read_raw
from resnet_port.checkpoints.inspect import main as inspect_main
from resnet_port.checkpoints.untrusted import StandIn, load_untrusted
from resnet_port.errors import CheckpointError
from tests.core.independent_builders import (
    mmcls_v1d_forward,
    mmcls_v1d_state_dict,
    torchvision_forward,
    torchvision_state_dict,
)

torch.set_num_threads(1)
X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(7))


def _check(model, forward, sd, depth):
    with torch.inference_mode():
        torch.testing.assert_close(model(X), forward(sd, depth, X), rtol=1e-4, atol=1e-4)


def _optimizer_and_scheduler(sd):
    """A real SGD optimizer (with momentum buffers) and StepLR over tensors shaped like the model's."""
    params = [torch.nn.Parameter(v.clone().float()) for k, v in sd.items() if v.is_floating_point()][:6]
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4)
    sum(p.sum() for p in params).backward()
    opt.step()
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=30, gamma=0.1)
    return opt.state_dict(), sched.state_dict()


def _torchvision_args():
    # parsed by a real argparse parser, as train.py does
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--model-ema", action="store_true")
    parser.add_argument("--model-ema-decay", type=float, default=0.99998)
    return parser.parse_args(["--model-ema"])


def _averaged(sd, n):
    """torchvision's ExponentialMovingAverage (an AveragedModel): 'module.' names plus n_averaged."""
    out = OrderedDict((f"module.{k}", v) for k, v in sd.items())
    out["n_averaged"] = torch.tensor(n)
    return out


def _torchvision_train_file(path, legacy=False):
    sd, ema = torchvision_state_dict(18, 10, seed=1), torchvision_state_dict(18, 10, seed=2)
    opt, sched = _optimizer_and_scheduler(sd)
    checkpoint = {
        "model": sd, "optimizer": opt, "lr_scheduler": sched, "epoch": 41, "args": _torchvision_args(),
        "model_ema": _averaged(ema, 1234),
    }
    torch.save(checkpoint, path, _use_new_zipfile_serialization=not legacy)
    return sd, ema


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_torchvision_train_checkpoint(tmp_path, legacy):
    path = tmp_path / "checkpoint.pth"
    sd, ema = _torchvision_train_file(path, legacy)
    # today's plain weights-only load refuses it (the Namespace is a foreign global)
    with pytest.raises(Exception, match="argparse"):
        torch.load(path, weights_only=True)
    model, meta = load_model(path)
    _check(model, torchvision_forward, sd, 18)
    assert meta.arch == "resnet18"
    details = meta.source.details
    assert details["weights_key"] == "model" and details["container"] == "torchvision train.py"
    assert details["pickle_stand_ins"] == ["argparse.Namespace"]
    assert details["training"]["epoch"] == 41
    model_ema, meta_ema = load_model(path, ema=True)
    _check(model_ema, torchvision_forward, ema, 18)
    assert meta_ema.source.details["weights_key"] == "model_ema"
    # the two really differ, so picking the wrong one would fail above
    assert not torch.equal(sd["fc.weight"], ema["fc.weight"])


def test_namespace_stand_in_records_the_arguments(tmp_path):
    path = tmp_path / "checkpoint.pth"
    _torchvision_train_file(path)
    loaded = load_untrusted(path)
    args = loaded.payload["args"]
    assert isinstance(args, StandIn) and not isinstance(args, argparse.Namespace)
    assert args.qualified_name == "argparse.Namespace"
    assert args.state == {"model": "resnet18", "lr": 0.5, "model_ema": True, "model_ema_decay": 0.99998}
    # optimizer and scheduler state are plain containers and load as such
    assert loaded.payload["optimizer"]["param_groups"][0]["momentum"] == 0.9
    assert loaded.payload["lr_scheduler"]["step_size"] == 30


def test_timm_train_checkpoint_with_numpy_scalars(tmp_path):
    sd, ema = torchvision_state_dict(18, 10, seed=3), torchvision_state_dict(18, 10, seed=4)
    opt, _ = _optimizer_and_scheduler(sd)
    args = argparse.Namespace(model="resnet18", seed=np.int64(42), smoothing=np.float32(0.1), lr=None)
    checkpoint = {
        "epoch": 99, "arch": "resnet18", "state_dict": OrderedDict(sd), "optimizer": opt, "version": 2,
        "args": args, "metric": np.float64(71.25), "state_dict_ema": OrderedDict(ema),
    }
    path = tmp_path / "model_best.pth.tar"
    torch.save(checkpoint, path)
    model, meta = load_model(path)
    _check(model, torchvision_forward, sd, 18)
    details = meta.source.details
    assert details["container"] == "timm train.py" and details["weights_key"] == "state_dict"
    assert details["training"] == {"epoch": 99, "arch": "resnet18", "metric": 71.25, "version": 2}
    assert "argparse.Namespace" in details["pickle_stand_ins"]
    model_ema, meta_ema = load_model(path, ema=True)
    _check(model_ema, torchvision_forward, ema, 18)
    assert meta_ema.source.details["weights_key"] == "state_dict_ema"
    # numpy scalars come back as real numpy values, with their dtype
    payload = load_untrusted(path).payload
    assert type(payload["metric"]) is np.float64 and payload["metric"] == 71.25
    state = payload["args"].state
    assert type(state["seed"]) is np.int64 and state["seed"] == 42
    assert type(state["smoothing"]) is np.float32 and state["smoothing"] == np.float32(0.1)


HISTORY_BUFFER = '''
import numpy as np
from pathlib import Path

class HistoryBuffer:
    """Stand-in written by the test for mmengine.logging.history_buffer.HistoryBuffer (same pickled form)."""
    def __init__(self, log_history=[], count_history=[], max_length=1000000):
        self.max_length = max_length
        self._set_default_statistics()
        self._log_history = np.array(log_history)
        self._count_history = np.array(count_history)
    def _set_default_statistics(self):
        self._statistics_methods = {"min": "min", "max": "max"}
'''


def _write_fake_mmengine(root, marker=None):
    pkg = root / "mmengine"
    (pkg / "logging").mkdir(parents=True)
    side_effect = f"open({str(marker)!r}, 'w').close()\n" if marker else ""
    (pkg / "__init__.py").write_text(side_effect)
    (pkg / "logging" / "__init__.py").write_text("")
    (pkg / "logging" / "history_buffer.py").write_text(textwrap.dedent(HISTORY_BUFFER))


def _save_with_fake_mmengine(root, obj, path):
    """Save ``obj`` (built by a callable that imports the fake mmengine) with the package importable
    only while saving, so the loader later meets a real foreign global."""
    sys.path.insert(0, str(root))
    try:
        from mmengine.logging.history_buffer import HistoryBuffer  # noqa: F401  (the test's own package)

        torch.save(obj(HistoryBuffer), path)
    finally:
        sys.path.remove(str(root))
        for name in [n for n in sys.modules if n == "mmengine" or n.startswith("mmengine.")]:
            del sys.modules[name]


def _mmengine_checkpoint(sd, ema_pair=None):
    def build(HistoryBuffer):
        hub = {
            "log_scalars": {
                "train/loss": HistoryBuffer([2.5, 2.25, 2.0], [1, 1, 1]),
                "train/lr": HistoryBuffer([0.1, 0.1], [1, 1]),
            },
            "runtime_info": {"epoch": 3, "iter": 1500, "dataset_meta": {"classes": ("a", "b")}},
            "resumed_keys": {"epoch": False},
        }
        checkpoint = {
            "meta": {"epoch": 3, "iter": 1500, "cfg": "model = dict(type='ImageClassifier')", "seed": 1,
                     "mmengine_version": "0.10.4", "time": "20261130_120000"},
            "state_dict": OrderedDict(sd),
            "message_hub": hub,
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": [0, 1]}]},
            "param_schedulers": [{"milestones": {30: 1, 60: 1}, "gamma": 0.1, "base_lrs": [0.1]}],
        }
        if ema_pair is not None:
            checkpoint["ema_state_dict"] = ema_pair
        return checkpoint

    return build


def test_mmengine_checkpoint_with_history_buffers(tmp_path):
    sd = mmcls_v1d_state_dict(50, 10, seed=5)
    imported = tmp_path / "mmengine_was_imported"
    _write_fake_mmengine(tmp_path / "site", marker=imported)
    path = tmp_path / "epoch_3.pth"
    _save_with_fake_mmengine(tmp_path / "site", _mmengine_checkpoint(sd), path)
    imported.unlink()  # importing while saving created it
    model, meta = load_model(path)
    _check(model, mmcls_v1d_forward, sd, 50)
    assert meta.arch == "resnet50_v1d"
    details = meta.source.details
    assert details["container"] == "mmengine" and details["weights_key"] == "state_dict"
    assert "mmengine.logging.history_buffer.HistoryBuffer" in details["pickle_stand_ins"]
    assert not imported.exists(), "the loader imported the foreign package"
    # the HistoryBuffer stand-in recorded its state, numpy arrays rebuilt from their bytes
    buffer = load_untrusted(path).payload["message_hub"]["log_scalars"]["train/loss"]
    assert buffer.qualified_name == "mmengine.logging.history_buffer.HistoryBuffer"
    np.testing.assert_array_equal(buffer.state["_log_history"], np.array([2.5, 2.25, 2.0]))
    assert buffer.state["_log_history"].dtype == np.float64
    np.testing.assert_array_equal(buffer.state["_count_history"], np.array([1, 1, 1]))
    assert buffer.state["max_length"] == 1000000


def test_mmengine_ema_hook_swapped_pair(tmp_path):
    """mmengine's EMAHook swaps before saving: 'state_dict' = averaged, 'ema_state_dict' = raw + 'module.'."""
    raw, averaged = mmcls_v1d_state_dict(50, 10, seed=6), mmcls_v1d_state_dict(50, 10, seed=8)
    pair = OrderedDict((f"module.{k}", v) for k, v in raw.items())
    pair["steps"] = torch.tensor(1500)
    _write_fake_mmengine(tmp_path / "site")
    path = tmp_path / "epoch_3.pth"
    _save_with_fake_mmengine(tmp_path / "site", _mmengine_checkpoint(averaged, pair), path)
    model, meta = load_model(path)
    _check(model, mmcls_v1d_forward, raw, 50)
    assert meta.source.details["weights_key"] == "ema_state_dict"
    model_ema, meta_ema = load_model(path, ema=True)
    _check(model_ema, mmcls_v1d_forward, averaged, 50)
    assert meta_ema.source.details["weights_key"] == "state_dict"


def test_several_candidates_without_a_rule_is_an_error_listing_them(tmp_path):
    a, b = torchvision_state_dict(18, 10, seed=1), torchvision_state_dict(18, 10, seed=2)
    both = tmp_path / "both.pth"
    torch.save({"model": a, "state_dict": b, "epoch": 3}, both)
    with pytest.raises(CheckpointError, match=r"both.pth: several model weights candidates \(state_dict, model\)"):
        load_model(both)
    unknown = tmp_path / "gan.pth"
    torch.save({"generator": a, "discriminator": b}, unknown)
    with pytest.raises(CheckpointError, match=r"several state_dict candidates \(generator, discriminator\)"):
        load_model(unknown)
    two_ema = tmp_path / "two_ema.pth"
    torch.save({"model": a, "model_ema": a, "state_dict_ema": b}, two_ema)
    with pytest.raises(CheckpointError, match=r"several EMA weights candidates \(model_ema, state_dict_ema\)"):
        load_model(two_ema, ema=True)
    # the same weights under two keys are one candidate
    same = tmp_path / "same.pth"
    torch.save({"model": a, "state_dict": dict(a)}, same)
    model, _ = load_model(same)
    _check(model, torchvision_forward, a, 18)


def test_ema_requests_that_cannot_be_met(tmp_path):
    sd = torchvision_state_dict(18, 10, seed=1)
    bare = tmp_path / "bare.pth"
    torch.save(sd, bare)
    with pytest.raises(CheckpointError, match="bare.pth: --ema given, but the file is a bare state_dict"):
        load_model(bare, ema=True)
    no_ema = tmp_path / "no_ema.pth"
    torch.save({"model": sd, "epoch": 1}, no_ema)
    with pytest.raises(CheckpointError, match="no_ema.pth: --ema given, but the file holds no EMA weights"):
        read_raw(no_ema, ema=True)
    only_ema = tmp_path / "only_ema.pth"
    torch.save({"model_ema": _averaged(sd, 3), "epoch": 1}, only_ema)
    with pytest.raises(CheckpointError, match=r"holds only EMA weights \(model_ema\); pass --ema"):
        load_model(only_ema)
    model, _ = load_model(only_ema, ema=True)
    _check(model, torchvision_forward, sd, 18)


def test_inspect_checkpoint_cli_ema(tmp_path, capsys):
    path = tmp_path / "checkpoint.pth"
    _, ema = _torchvision_train_file(path)
    out = tmp_path / "info.json"
    assert inspect_main([str(path), "--ema", "--json", str(out)]) == 0
    info = json.loads(out.read_text())
    assert info["source"]["details"]["weights_key"] == "model_ema"
    assert info["source"]["details"]["pickle_stand_ins"] == ["argparse.Namespace"]
    printed = capsys.readouterr().out
    assert "model_ema" in printed and "argparse.Namespace (recorded, never imported or run)" in printed
    # --ema on a file without EMA weights: one line, exit 2
    bare = tmp_path / "bare.pth"
    torch.save(ema, bare)
    assert inspect_main([str(bare), "--ema"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bare.pth" in err and "--ema" in err


def test_validate_and_audit_take_ema(tmp_path, capsys):
    from resnet_port.audit.cli import main as audit_main
    from resnet_port.validation.cli import load_for_validation

    path = tmp_path / "checkpoint.pth"
    sd, ema = _torchvision_train_file(path)
    model, meta = load_for_validation(path, None, "torchvision", ema=True)
    _check(model, torchvision_forward, ema, 18)
    bare = tmp_path / "ema.pth"
    torch.save(ema, bare)
    out = tmp_path / "audit.json"
    # the training checkpoint's EMA entry against the same weights saved bare: identical
    assert audit_main([str(path), str(bare), "--ema-a", "--json", str(out), "-q", "-n", "1"]) == 0
    same = json.loads(out.read_text())
    # and without --ema-a the model weights are compared, which differ
    audit_main([str(path), str(bare), "--json", str(out), "-q", "-n", "1"])
    differ = json.loads(out.read_text())
    assert same["verdict"] != differ["verdict"]
    assert same["max_abs_diff"] == 0.0 and differ["max_abs_diff"] > 1e-3


def test_other_data_globals_are_stand_ins(tmp_path):
    import pathlib
    import types

    sd = torchvision_state_dict(18, 10, seed=1)
    path = tmp_path / "ckpt.pth"
    torch.save({"model": sd, "cfg": types.SimpleNamespace(out=pathlib.PurePosixPath("/runs/x"), n=range(3))}, path)
    model, meta = load_model(path)
    _check(model, torchvision_forward, sd, 18)
    assert set(meta.source.details["pickle_stand_ins"]) == {"types.SimpleNamespace", "pathlib.PurePosixPath", "builtins.range"}


def _module_tree(sd):
    """A whole nn.Module (plain Module containers) holding ``sd`` under the same names: parameters for
    weights, buffers for BN statistics, plus a non-persistent buffer that a state_dict leaves out."""
    root = torch.nn.Module()
    for key, value in sd.items():
        *path, leaf = key.split(".")
        module = root
        for part in path:
            if part not in module._modules:
                module.add_module(part, torch.nn.Module())
            module = module._modules[part]
        if leaf in ("running_mean", "running_var", "num_batches_tracked"):
            module.register_buffer(leaf, value.clone())
        else:
            module.register_parameter(leaf, torch.nn.Parameter(value.clone()))
    root.register_buffer("scratch", torch.zeros(3), persistent=False)
    return root


@pytest.mark.parametrize("wrap", ["bare", "under_model_key", "data_parallel"])
def test_whole_pickled_models_give_their_weights(tmp_path, wrap):
    sd = torchvision_state_dict(18, 10, seed=9)
    model = _module_tree(sd)
    if wrap == "data_parallel":  # DataParallel-style: the network under 'module'
        outer = torch.nn.Module()
        outer.add_module("module", model)
        model = outer
    path = tmp_path / "whole.pt"
    torch.save(model if wrap != "under_model_key" else {"model": model, "epoch": 5, "optimizer": None}, path)
    loaded, meta = load_model(path)
    _check(loaded, torchvision_forward, sd, 18)
    assert "torch.nn.modules.module.Module" in meta.source.details["pickle_stand_ins"]
    assert meta.source.details["training"]["pickled_modules"]


def test_audit_ema_on_a_non_checkpoint_is_refused(tmp_path, capsys):
    from resnet_port.audit.cli import main as audit_main
    from resnet_port.audit.sources import HDF5_MAGIC

    h5 = tmp_path / "net.caffemodel.h5"
    h5.write_bytes(HDF5_MAGIC + bytes(64))
    bare = tmp_path / "bare.pth"
    torch.save(torchvision_state_dict(18, 10), bare)
    assert audit_main([str(h5), str(bare), "--ema-a"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "net.caffemodel.h5" in err and "--ema-a" in err


ATTRIBUTE_DICT = '''
class AttributeDict(dict):
    """Like Lightning's: a dict whose items read as attributes (the test's own stand-in package)."""
    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError as exc:
            raise AttributeError(key) from exc
    def __setattr__(self, key, value):
        self[key] = value
'''


def test_dict_subclasses_load_as_plain_dicts(tmp_path):
    """Lightning-style checkpoints: hyper_parameters in an AttributeDict (a dict subclass whose items
    the pickle sets one by one), plus a defaultdict; the weights under 'state_dict' with 'model.' names."""
    from collections import defaultdict

    site = tmp_path / "site"
    (site / "lightning_fabric" / "utilities").mkdir(parents=True)
    (site / "lightning_fabric" / "__init__.py").write_text("")
    (site / "lightning_fabric" / "utilities" / "__init__.py").write_text("")
    (site / "lightning_fabric" / "utilities" / "data.py").write_text(ATTRIBUTE_DICT)
    sd = torchvision_state_dict(18, 10, seed=11)
    counts = defaultdict(list, {"a": [1, 2]})
    path = tmp_path / "epoch=3-step=900.ckpt"
    sys.path.insert(0, str(site))
    try:
        from lightning_fabric.utilities.data import AttributeDict

        hparams = AttributeDict(lr=0.1, arch="resnet18", num_classes=10)
        torch.save({"epoch": 3, "global_step": 900, "pytorch-lightning_version": "2.4.0",
                    "state_dict": OrderedDict((f"model.{k}", v) for k, v in sd.items()),
                    "hyper_parameters": hparams, "counts": counts, "optimizer_states": [], "lr_schedulers": []}, path)
    finally:
        sys.path.remove(str(site))
        for name in [n for n in sys.modules if n.startswith("lightning_fabric")]:
            del sys.modules[name]
    model, meta = load_model(path)
    _check(model, torchvision_forward, sd, 18)
    assert {"collections.defaultdict", "lightning_fabric.utilities.data.AttributeDict"} <= set(meta.source.details["pickle_stand_ins"])
    payload = load_untrusted(path).payload
    assert type(payload["hyper_parameters"]) is dict and payload["hyper_parameters"] == {"lr": 0.1, "arch": "resnet18", "num_classes": 10}
    assert type(payload["counts"]) is dict and payload["counts"] == {"a": [1, 2]}


def test_mmcv_ema_buffers_swapped_into_the_model(tmp_path):
    """mmcv's EMAHook: ema_<name> buffers beside every parameter, swapped before saving, so the
    parameters hold the average and the buffers the raw weights."""
    raw, averaged = mmcls_v1d_state_dict(50, 10, seed=12), mmcls_v1d_state_dict(50, 10, seed=13)
    params = [k for k in raw if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    state = OrderedDict((k, averaged[k] if k in params else raw[k]) for k in raw)
    for k in params:
        state[f"ema_{k.replace('.', '_')}"] = raw[k]
    path = tmp_path / "epoch_100.pth"
    torch.save({"meta": {"epoch": 100, "mmcv_version": "1.7.0", "CLASSES": list("abcdefghij")}, "state_dict": state,
                "optimizer": {"state": {}, "param_groups": []}}, path)
    expect_ema = {k: averaged[k] if k in params else raw[k] for k in raw}
    model, meta = load_model(path)
    _check(model, mmcls_v1d_forward, raw, 50)
    assert "raw weights" in meta.source.details["rule"]
    model_ema, meta_ema = load_model(path, ema=True)
    _check(model_ema, mmcls_v1d_forward, expect_ema, 50)
    assert "averaged weights" in meta_ema.source.details["rule"] and meta_ema.source.details["ema"] is True
    bare = tmp_path / "bare.pth"  # the same, as a bare state_dict
    torch.save(state, bare)
    _check(load_model(bare, ema=True)[0], mmcls_v1d_forward, expect_ema, 50)
    _check(load_model(bare)[0], mmcls_v1d_forward, raw, 50)
