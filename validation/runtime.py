"""Devices and processes: which device, how many DataLoader workers and images a batch, and this
process's place among several evaluating processes.

Distributed (``torchrun --nproc-per-node N -m resnet_port.validation.cli ...``, or any initialised
process group): rank r takes images r, r + N, r + 2N, ... (no padding, unlike ``DistributedSampler``,
which repeats images to even the shards and so counts some twice); what each rank measured is
gathered once at the end.  Accuracy and parity both run through this (`validation.loop`).
"""

from __future__ import annotations

import os
import platform
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import PIL
import torch
import torch.distributed as dist

from resnet_port import __version__
from resnet_port.errors import InputError


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise InputError(f"--device {device!r} is not a device name (cpu, cuda, cuda:1, auto)") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device}: CUDA is not available on this machine")
    return resolved


@dataclass
class Shard:
    """This process's place among the evaluating processes."""

    rank: int = 0
    world: int = 1
    owns_group: bool = False

    @classmethod
    def current(cls, device: torch.device) -> "Shard":
        """The initialised process group, or the one torchrun's environment describes, or none."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world > 1 and dist.is_available() and "RANK" in os.environ:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            return cls(dist.get_rank(), dist.get_world_size(), owns_group=True)
        return cls()

    def device_for(self, device: torch.device) -> torch.device:
        """One GPU per process: ``cuda`` under torchrun means ``cuda:LOCAL_RANK``."""
        if device.type != "cuda" or device.index is not None or self.world == 1:
            return device
        local = int(os.environ.get("LOCAL_RANK", self.rank % torch.cuda.device_count()))
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        return device

    def take(self, items: Sequence[Any]) -> list[Any]:
        return list(items[self.rank :: self.world])

    def global_index(self, local: int) -> int:
        return self.rank + self.world * local

    def gather(self, obj: Any) -> list[Any]:
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.owns_group:
            dist.destroy_process_group()


@contextmanager
def sharded(device: torch.device) -> Iterator[tuple[Shard, torch.device]]:
    """This process's `Shard` and its device; a process group opened here is closed on the way out."""
    shard = Shard.current(device)
    try:
        yield shard, shard.device_for(device)
    finally:
        shard.close()


def default_workers(device: torch.device, processes: int = 1) -> int:
    """DataLoader workers per process: on a GPU enough to feed it (the decoder bounds the rate
    there); on a CPU, where the model bounds it, one (two cores) to four, beside the model threads."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    cores = max(1, cores // max(1, processes))
    if device.type == "cuda":
        return max(1, min(12, cores - 2))
    return max(1, min(4, cores // 4))


def default_batch_size(device: torch.device, crops: int) -> int:
    """Images per batch: ~8-10 crops a forward on a CPU (its best throughput), ~256 on a GPU."""
    per_forward = 256 if device.type == "cuda" else 8
    return max(1, per_forward // crops)


def prepare_model(model: torch.nn.Module, device: torch.device, channels_last: bool) -> torch.nn.Module:
    """Eval mode, on the device, channels_last when asked: in place, as ``Module.to`` does."""
    model = model.eval().to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def versions() -> dict[str, str]:
    return {
        "resnet_port": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "python": platform.python_version(),
    }
