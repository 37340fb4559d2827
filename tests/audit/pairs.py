"""Small reference networks with every tensor randomised, and the test's own forward pass.

Default-initialised models have BatchNorm gammas of exactly 1 and zero betas and means, which
would hide half of the porting bugs; every tensor here is drawn from a seeded generator instead.
The preprocessing written here (images already at the crop size, so only order, scale, mean and
std apply) is independent of `audit.inputs` on purpose: the tests measure with it what a bug does.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from resnet_port.checkpoints import CheckpointMetadata, Preprocessing, save_checkpoint
from resnet_port.resnet_ref import ResNetSpec, build_model, get_spec

CROP = 48


def small_spec(arch: str, **changes) -> ResNetSpec:
    """``arch`` with one block per stage and narrow widths: the same layout, milliseconds to run."""
    spec = get_spec(arch, num_classes=10)
    base = dict(layers=(1, 1, 1, 1), widths=(8, 8, 16, 16), stem_width=8)
    base.update(changes)
    return spec.replace(**base)


def random_state_dict(spec: ResNetSpec, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    model = build_model(spec)
    bns = {k[: -len(".running_mean")] for k in model.state_dict() if k.endswith(".running_mean")}
    out = {}
    for key, value in model.state_dict().items():
        module, _, leaf = key.rpartition(".")
        shape = value.shape
        if leaf == "num_batches_tracked":
            out[key] = value.clone()
        elif module in bns and leaf == "running_mean":
            out[key] = torch.randn(shape, generator=gen) * 0.1
        elif module in bns and leaf == "running_var":
            out[key] = torch.rand(shape, generator=gen) * 1.5 + 0.5
        elif module in bns and leaf == "weight":
            out[key] = torch.rand(shape, generator=gen) + 0.5
        elif leaf == "bias":
            out[key] = torch.randn(shape, generator=gen) * 0.1
        elif value.ndim == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            out[key] = torch.randn(shape, generator=gen) * (2.0 / fan_in) ** 0.5 * 0.7
        else:
            out[key] = torch.randn(shape, generator=gen) / shape[-1] ** 0.5
    return out


def torch_prep(**changes) -> Preprocessing:
    base = dict(channel_order="RGB", pixel_max=1.0, resize=CROP, crop=CROP)
    base.update(changes)
    return Preprocessing(**base)


def caffe_prep(**changes) -> Preprocessing:
    base = dict(channel_order="BGR", pixel_max=255.0, mean=(104.0, 117.0, 123.0), std=None, resize=CROP, crop=CROP)
    base.update(changes)
    return Preprocessing(**base)


def metadata(spec: ResNetSpec, prep: Preprocessing) -> CheckpointMetadata:
    return CheckpointMetadata(spec=spec, preprocessing=dataclasses.replace(prep))


def save(path: Path, spec: ResNetSpec, state_dict: dict[str, torch.Tensor], prep: Preprocessing) -> Path:
    save_checkpoint(path, spec, state_dict, metadata(spec, prep))
    return path


def sample_images(count: int = 4, seed: int = 7) -> np.ndarray:
    """RGB images in [0, 1] at the crop size, (N, 3, CROP, CROP), float64."""
    gen = np.random.default_rng(seed)
    coarse = gen.random((count, 3, 6, 6))
    smooth = np.kron(coarse, np.ones((1, 1, CROP // 6, CROP // 6)))
    return np.clip(0.7 * smooth + 0.3 * gen.random((count, 3, CROP, CROP)), 0.0, 1.0)


def network_input(images: np.ndarray, prep: Preprocessing) -> torch.Tensor:
    """The test's own reading of a `Preprocessing`, for crop-sized images."""
    x = images[:, ::-1] if prep.channel_order == "BGR" else images
    x = x * prep.pixel_max
    if prep.mean_image is not None:
        x = x - np.asarray(prep.mean_image, dtype=np.float64)[None]
    elif prep.mean is not None:
        x = x - np.asarray(prep.mean, dtype=np.float64)[None, :, None, None]
    if prep.std is not None:
        x = x / np.asarray(prep.std, dtype=np.float64)[None, :, None, None]
    return torch.from_numpy(np.ascontiguousarray(x)).float()


def logits(spec: ResNetSpec, state_dict: dict[str, torch.Tensor], x: torch.Tensor) -> np.ndarray:
    model = build_model(spec)
    full = model.state_dict()
    full.update(state_dict)
    model.load_state_dict(full)
    with torch.inference_mode():
        return model.eval()(x).double().numpy()


def rel_gap(la: np.ndarray, lb: np.ndarray) -> float:
    return float(np.abs(la - lb).max() / np.abs(la).max())
