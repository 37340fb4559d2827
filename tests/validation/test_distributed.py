"""Two CPU processes (gloo) give the same totals and predictions as one, for accuracy and for parity:
every image counted once.

Seven images over two ranks is an uneven split (4 + 3), which a padding sampler such as
``DistributedSampler`` would even out by counting an image twice."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from resnet_port.validation import compare_checkpoints, evaluate
from resnet_port.validation.decode import BadImageError

from .conftest import FOLDER_FILES, tiny_metadata, tiny_model

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def free_port() -> int:
    """A free port whose successor is free too (the test uses both)."""
    for _ in range(50):
        with socket.socket() as a, socket.socket() as b:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            try:
                b.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError("no two consecutive free ports")


def _rank_main(rank: int, world: int, port: int, data: str, out_dir: str, bad_data: str) -> None:
    """1-crop in a process group this function sets up; 10-crop in the one evaluate() sets up from
    torchrun's environment variables (the path ``torchrun -m resnet_port.validation.cli`` takes)."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        _run(rank, data, out_dir, 1)
        _parity(rank, data, out_dir)
    finally:
        dist.destroy_process_group()
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port + 1))
    _run(rank, data, out_dir, 10)
    assert not dist.is_initialized()  # evaluate() closed the group it opened
    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        del os.environ[key]
    # A bad image on one rank only: both ranks stop with the error, neither waits for the other.
    dist.init_process_group("gloo", init_method=f"file://{out_dir}/store", rank=rank, world_size=world)
    try:
        evaluate(tiny_model(), tiny_metadata(), bad_data, 1, workers=0, progress=False)
    except BadImageError as exc:
        Path(out_dir, f"bad_{rank}.txt").write_text(str(exc))
    finally:
        dist.destroy_process_group()


def _run(rank: int, data: str, out_dir: str, crops: int) -> None:
    result = evaluate(
        tiny_model(), tiny_metadata(), data, crops, predictions=Path(out_dir) / f"pred{crops}.jsonl", workers=0, progress=False
    )
    Path(out_dir, f"result{crops}_{rank}.json").write_text(json.dumps(result))


def nudged_model() -> torch.nn.Module:
    """The tiny model with its classifier moved a little: it agrees with the original on some images only."""
    model = tiny_model(0)
    with torch.no_grad():
        model.fc.weight.add_(torch.randn(model.fc.weight.shape, generator=torch.Generator().manual_seed(3)) * SCALE)
    return model


SCALE = 0.1  # 0.05 and 0.2 also split the images; 0.5 moves every top-1


def _parity(rank: int, data: str, out_dir: str) -> None:
    result = compare_checkpoints(tiny_model(0), tiny_metadata(), nudged_model(), tiny_metadata(), data, 10, workers=0, progress=False)
    Path(out_dir, f"parity_{rank}.json").write_text(json.dumps(result))


def comparable(result: dict) -> dict:
    return {k: result[k] for k in ("top1", "top5", "images", "crops", "skipped")} | {"per_rank": None}


def test_two_gloo_processes_equal_one(imagefolder, corrupt_folder, tmp_path):
    out = tmp_path / "two"
    out.mkdir()
    mp.spawn(_rank_main, args=(2, free_port(), str(imagefolder), str(out), str(corrupt_folder)), nprocs=2, join=True)
    for crops in (1, 10):
        one_file = tmp_path / f"one{crops}.jsonl"
        single = evaluate(tiny_model(), tiny_metadata(), imagefolder, crops, predictions=one_file, workers=0, progress=False)
        r0, r1 = (json.loads((out / f"result{crops}_{r}.json").read_text()) for r in (0, 1))
        assert r0["processes"] == 2 and r0["images"] == len(FOLDER_FILES) == single["images"]
        assert comparable(r0) == comparable(r1) == comparable(single)
        one = one_file.read_text().splitlines()
        two = (out / f"pred{crops}.jsonl").read_text().splitlines()
        assert len(two) == len(one)
        for a, b in zip(one, two):
            a, b = json.loads(a), json.loads(b)
            assert (a["path"], a["label"], a["top5"]) == (b["path"], b["label"], b["top5"])
            assert a["probs"] == pytest.approx(b["probs"], abs=1e-6)
    # Parity runs through the same loop: sharded, its sums added once, every image counted once.
    single = compare_checkpoints(tiny_model(0), tiny_metadata(), nudged_model(), tiny_metadata(), imagefolder, 10, workers=0, progress=False)
    assert 0 < single["top1_agreement"] < 1, single  # some images agree, some do not
    for rank in (0, 1):
        two = json.loads((out / f"parity_{rank}.json").read_text())
        assert two["processes"] == 2 and two["images"] == single["images"] == len(FOLDER_FILES)
        assert two["top1_agreement"] == single["top1_agreement"] and two["disagreements"] == single["disagreements"]
        assert two["max_abs_diff"] == pytest.approx(single["max_abs_diff"], rel=1e-6)
        assert two["mean_abs_diff"] == pytest.approx(single["mean_abs_diff"], rel=1e-6)
    # The truncated file is the second of three: rank 1's; rank 0 reports it too.
    for rank in (0, 1):
        assert "b_truncated.JPEG" in (out / f"bad_{rank}.txt").read_text()
