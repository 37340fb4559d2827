"""Top-k accuracy, accumulated as integer counts so that shards add up exactly.

Counts (not running means) are what travel between processes: every rank adds its correct/total
tallies into one tensor, reduced once, so each image weighs the same however the data was split.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


def average_crop_probabilities(logits: torch.Tensor, crops: int) -> torch.Tensor:
    """(images * crops, classes) logits -> (images, classes) softmax scores averaged over each
    image's crops: the 10-crop protocol averages probabilities, not logits."""
    probs = torch.softmax(logits.float(), dim=1)
    return probs.view(-1, crops, probs.shape[1]).mean(dim=1)


def topk_hits(probs: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[int, torch.Tensor]:
    """For each k, a bool per image: is the label among the k highest scores?"""
    kmax = min(max(ks), probs.shape[1])
    top = probs.topk(kmax, dim=1).indices
    hits = top == labels.view(-1, 1)
    return {k: hits[:, : min(k, kmax)].any(dim=1) for k in ks}


@dataclass
class Tally:
    """Integer counts of images and top-1 / top-5 hits, overall and per class."""

    num_classes: int
    images: int = 0
    top1: int = 0
    top5: int = 0
    class_images: torch.Tensor = field(default=None)  # type: ignore[assignment]
    class_top1: torch.Tensor = field(default=None)  # type: ignore[assignment]
    class_top5: torch.Tensor = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        for name in ("class_images", "class_top1", "class_top5"):
            if getattr(self, name) is None:
                setattr(self, name, torch.zeros(self.num_classes, dtype=torch.int64))

    def add(self, probs: torch.Tensor, labels: torch.Tensor) -> dict[int, torch.Tensor]:
        labels = labels.to(probs.device)
        hits = topk_hits(probs, labels)
        labels_cpu = labels.cpu()
        h1, h5 = hits[1].cpu().long(), hits[5].cpu().long()
        self.images += int(labels_cpu.numel())
        self.top1 += int(h1.sum())
        self.top5 += int(h5.sum())
        self.class_images.index_add_(0, labels_cpu, torch.ones_like(labels_cpu))
        self.class_top1.index_add_(0, labels_cpu, h1)
        self.class_top5.index_add_(0, labels_cpu, h5)
        return hits

    def as_tensor(self) -> torch.Tensor:
        head = torch.tensor([self.images, self.top1, self.top5], dtype=torch.int64)
        return torch.cat([head, self.class_images, self.class_top1, self.class_top5])

    @classmethod
    def from_tensor(cls, data: torch.Tensor, num_classes: int) -> "Tally":
        data = data.cpu()
        n = num_classes
        return cls(
            num_classes,
            int(data[0]),
            int(data[1]),
            int(data[2]),
            data[3 : 3 + n].clone(),
            data[3 + n : 3 + 2 * n].clone(),
            data[3 + 2 * n : 3 + 3 * n].clone(),
        )

    def summary(self) -> dict[str, float | int]:
        n = max(self.images, 1)
        top1, top5 = self.top1 / n, self.top5 / n
        return {"top1": top1, "top5": top5, "top1_error": 1.0 - top1, "top5_error": 1.0 - top5, "images": self.images}

    def per_class(self, names: list[str] | None = None) -> list[dict]:
        rows = []
        for c in torch.nonzero(self.class_images).flatten().tolist():
            count = int(self.class_images[c])
            row = {"class": c, "images": count, "top1": int(self.class_top1[c]) / count, "top5": int(self.class_top5[c]) / count}
            if names is not None and c < len(names):
                row["name"] = names[c]
            rows.append(row)
        return rows
