"""``--precision bf16``: the model under bfloat16 autocast, checked against the same crops fed by
hand to the model under ``torch.autocast`` (independent of the loop), and shown to differ from fp32
(so a run that ignored the option would fail), with the top-1 agreement with fp32 reported."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from resnet_port.errors import InputError
from resnet_port.validation import evaluate
from resnet_port.validation.cli import main

from .conftest import FOLDER_FILES, ref_crops, tiny_metadata, tiny_model

MEAN, STD = np.array((0.485, 0.456, 0.406)), np.array((0.229, 0.224, 0.225))


def by_hand(model, path, bf16: bool) -> np.ndarray:
    x = (ref_crops(path, 64, 56, 10) / 255.0 - MEAN) / STD
    x = torch.from_numpy(x.astype(np.float32)).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(x)
    return torch.softmax(logits.float(), 1).mean(0).numpy()


def test_bf16_matches_autocast_by_hand_and_differs_from_fp32(imagefolder, tmp_path):
    model = tiny_model()
    runs = {}
    for precision in ("fp32", "bf16"):
        pred = tmp_path / f"{precision}.jsonl"
        result = evaluate(model, tiny_metadata(), imagefolder, 10, precision=precision, predictions=pred, workers=0, progress=False)
        assert result["precision"] == precision
        runs[precision] = [json.loads(line) for line in pred.read_text().splitlines()]
    gap_to_fp32 = 0.0
    for (folder, name, *_), row32, row16 in zip(FOLDER_FILES, runs["fp32"], runs["bf16"]):
        path = imagefolder / folder / name
        hand16, hand32 = by_hand(model, path, True), by_hand(model, path, False)
        assert np.allclose(row16["probs"], hand16[row16["top5"]], atol=2e-3), name
        assert np.allclose(row32["probs"], hand32[row32["top5"]], atol=2e-5), name
        gap_to_fp32 = max(gap_to_fp32, float(np.abs(np.array(row16["probs"]) - hand32[row16["top5"]]).max()))
    assert gap_to_fp32 > 1e-4, gap_to_fp32  # bf16 really ran: fp32 would agree to ~1e-6
    agreement = np.mean([a["top5"][0] == b["top5"][0] for a, b in zip(runs["fp32"], runs["bf16"])])
    assert agreement >= 5 / 7  # ten-crop top-1 of a random model: nearly always the same class


def test_bad_precision():
    with pytest.raises(InputError, match="precision"):
        evaluate(tiny_model(), tiny_metadata(), "/nonexistent", precision="fp8")


def test_cli_records_precision(imagefolder, tmp_path):
    from resnet_port.checkpoints import save_checkpoint

    ckpt = tmp_path / "t.safetensors"
    model = tiny_model()
    save_checkpoint(ckpt, model.spec, model.state_dict(), tiny_metadata())
    out = tmp_path / "r.json"
    assert main([str(ckpt), "--data", str(imagefolder), "--precision", "bf16", "--json", str(out), "--workers", "0", "--no-progress", "--device", "cpu"]) == 0
    assert json.loads(out.read_text())["precision"] == "bf16"
