"""How fast ``validate`` runs, against a plain torchvision-style loop and against the model alone.

In one run, on the same images and the same ResNet-50 (random weights: speed does not depend on
them), this measures:

- the toolkit: `validation.evaluate` for 1-crop and 10-crop (images/s, from its start to its end,
  DataLoader workers included);
- the reference: what a PyTorch user writes (an ImageFolder-like dataset, PIL ``Resize`` /
  ``CenterCrop`` or ``TenCrop`` then ``ToTensor`` + ``Normalize`` per crop, a DataLoader with the
  same workers and batch size, ``torch.no_grad``), written here with Pillow since torchvision does
  not install beside this torch;
- the model-only limit: the same crops decoded and normalised beforehand, through the model in the
  toolkit's configuration (channels_last, ``inference_mode``, same batch size);
- where time goes: decode, resize, crop + stack, normalise and the model, per image, one thread.

Each repetition runs the three back to back (in alternating order); the ratios written are the
medians of those paired ratios, the images/s the best of each, since the machine may be shared.
``--quick`` (24 images, 4 for 10-crop, no new repetition after 50 s) keeps it under two minutes.
Writes ``benchmarks/results/validate.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from resnet_port.checkpoints import CheckpointMetadata, preset_preprocessing
from resnet_port.resnet_ref import create_model
from resnet_port.validation import evaluate
from resnet_port.validation.data import scan_dataset
from resnet_port.validation.decode import decode_image
from resnet_port.validation.evaluate import default_batch_size, default_workers, versions
from resnet_port.validation.sample import skimage_data_dir
from resnet_port.validation.transforms import CropTransform, Normalizer, crop_boxes, image_to_hwc, resize_shorter, take_crops

RESULTS = Path(__file__).resolve().parent / "results" / "validate.json"
# ImageNet val's common sizes (most images are 500x375 or 375x500, a few larger).
SIZES = [(500, 375), (375, 500), (500, 333), (500, 400), (640, 480), (333, 500), (500, 281)]
PHOTOS = ["chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png", "motorcycle_left.png", "camera.png"]


def make_images(root: Path, count: int) -> Path:
    """``count`` JPEGs of ImageNet-like sizes made from scikit-image's photos, in ImageFolder layout."""
    source = skimage_data_dir()
    for i in range(count):
        with Image.open(source / PHOTOS[i % len(PHOTOS)]) as photo:
            image = photo.convert("RGB").resize(SIZES[i % len(SIZES)], Image.Resampling.LANCZOS)
        folder = root / f"n{i % 10:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"img{i:05d}.JPEG", "JPEG", quality=90)
    return root


# -- the reference: a plain torchvision-style evaluation, written with Pillow ----------------------
MEAN = np.array((0.485, 0.456, 0.406), dtype=np.float32)
STD = np.array((0.229, 0.224, 0.225), dtype=np.float32)


def tv_resize(image: Image.Image, size: int) -> Image.Image:
    w, h = image.size
    if w <= h:
        return image.resize((size, int(size * h / w)), Image.Resampling.BILINEAR)
    return image.resize((int(size * w / h), size), Image.Resampling.BILINEAR)


def tv_center_crop(image: Image.Image, size: int) -> Image.Image:
    w, h = image.size
    left, top = int(round((w - size) / 2.0)), int(round((h - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def tv_ten_crop(image: Image.Image, size: int) -> list[Image.Image]:
    def five(img):
        w, h = img.size
        return [img.crop((0, 0, size, size)), img.crop((w - size, 0, w, size)), img.crop((0, h - size, size, h)),
                img.crop((w - size, h - size, w, h)), tv_center_crop(img, size)]  # fmt: skip

    return five(image) + five(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT))


def tv_to_tensor_normalize(image: Image.Image) -> torch.Tensor:
    x = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float().div(255)
    return (x - torch.from_numpy(MEAN).view(3, 1, 1)) / torch.from_numpy(STD).view(3, 1, 1)


class ReferenceFolder(Dataset):
    def __init__(self, samples, crops: int) -> None:
        self.samples, self.crops = samples, crops

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i):
        with open(self.samples[i].path, "rb") as f:
            image = Image.open(f).convert("RGB")
        image = tv_resize(image, 256)
        if self.crops == 1:
            return tv_to_tensor_normalize(tv_center_crop(image, 224)), self.samples[i].label
        return torch.stack([tv_to_tensor_normalize(c) for c in tv_ten_crop(image, 224)]), self.samples[i].label


def reference_loop(model, samples, crops: int, batch_size: int, workers: int) -> float:
    start = time.perf_counter()
    loader = DataLoader(ReferenceFolder(samples, crops), batch_size=batch_size, num_workers=workers)
    correct = 0
    with torch.no_grad():
        for x, y in loader:
            if crops == 10:
                probs = torch.softmax(model(x.view(-1, 3, 224, 224)), 1).view(x.shape[0], 10, -1).mean(1)
            else:
                probs = torch.softmax(model(x), 1)
            correct += int((probs.argmax(1) == y).sum())
    return len(samples) / (time.perf_counter() - start)


# -- the model-only limit ------------------------------------------------------------------------
def predecoded(samples, crops: int, batch_size: int, transform: CropTransform, normalizer: Normalizer) -> list[torch.Tensor]:
    batches, current = [], []
    for s in samples:
        current.append(transform(decode_image(s.path)).pixels)
        if len(current) == batch_size:
            batches.append(normalizer(torch.cat(current)))
            current = []
    if current:
        batches.append(normalizer(torch.cat(current)))
    return batches


def model_limit(model, batches: list[torch.Tensor], crops: int) -> float:
    images = sum(b.shape[0] for b in batches) // crops
    start = time.perf_counter()
    with torch.inference_mode():
        for x in batches:
            torch.softmax(model(x), 1).view(-1, crops, model.fc.out_features).mean(1)
    return images / (time.perf_counter() - start)


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


# -- where time goes -----------------------------------------------------------------------------
def breakdown(samples, model, crops: int, transform: CropTransform, normalizer: Normalizer) -> dict[str, float]:
    """Milliseconds per image, single-threaded stages (the model with the process's threads)."""
    t_decode = t_resize = t_crop = t_norm = 0.0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the stages run in one worker process each, single-threaded
    for s in samples:
        t0 = time.perf_counter()
        image = decode_image(s.path)
        t1 = time.perf_counter()
        resized = resize_shorter(image, 256)
        t2 = time.perf_counter()
        hwc = image_to_hwc(resized)
        pixels = take_crops(hwc, crop_boxes(hwc.shape[0], hwc.shape[1], 224, crops))
        t3 = time.perf_counter()
        normalizer(pixels)
        t4 = time.perf_counter()
        t_decode, t_resize, t_crop, t_norm = t_decode + t1 - t0, t_resize + t2 - t1, t_crop + t3 - t2, t_norm + t4 - t3
    torch.set_num_threads(threads)
    n = len(samples)
    x = normalizer(pixels.repeat(max(1, 8 // crops), 1, 1, 1))
    with torch.inference_mode():
        model(x)
        t0 = time.perf_counter()
        model(x)
        t_model = (time.perf_counter() - t0) / (x.shape[0] // crops)
    return {
        "decode_ms": 1000 * t_decode / n,
        "resize_ms": 1000 * t_resize / n,
        "crop_ms": 1000 * t_crop / n,
        "normalize_ms": 1000 * t_norm / n,
        "model_ms": 1000 * t_model,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few images and one repetition: under two minutes")
    parser.add_argument("--images", type=int, help="images for 1-crop (10-crop uses a third, at least 3); default 24 quick, 96 full")
    parser.add_argument("--repeats", type=int, help="repetitions, in alternating order (default 3; --quick stops after 50 s)")
    parser.add_argument("--workers", type=int, help="DataLoader workers for both loops (default: the toolkit's default)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results file (default {RESULTS})")
    args = parser.parse_args(argv)
    count = args.images or (24 if args.quick else 96)
    repeats = args.repeats or 3
    device = torch.device(args.device)
    workers = default_workers(device) if args.workers is None else args.workers

    started = time.perf_counter()
    budget = 50.0 if args.quick else float("inf")
    torch.manual_seed(0)
    model = create_model("resnet50").eval()
    # Separate copies: Module.to(memory_format) converts in place.  The toolkit and the model-only
    # limit run channels_last (the toolkit's default), the reference loop plain NCHW.
    fast_model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    plain_model = model
    metadata = CheckpointMetadata(spec=model.spec, arch="resnet50", preprocessing=preset_preprocessing("torchvision"))
    results: dict = {
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
                    "device": str(device), "load_average_at_start": list(os.getloadavg())},  # fmt: skip
        "versions": versions(),
        "model": "resnet50 fp32",
        "workers": workers,
        "quick": args.quick,
        "protocols": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench-validate-") as tmp:
        root = make_images(Path(tmp) / "val", count)
        all_samples = scan_dataset(root).samples
        for crops in (1, 10):
            samples = all_samples if crops == 1 else all_samples[: max(3, count // 3)]
            batch_size = default_batch_size(device, crops)
            transform = CropTransform(metadata.preprocessing, crops)
            normalizer = Normalizer(metadata.preprocessing)
            batches = predecoded(samples, crops, batch_size, transform, normalizer)
            ours, ref, lim = [], [], []
            runs = {
                "toolkit": lambda: ours.append(
                    evaluate(fast_model, metadata, root, crops, limit=len(samples), batch_size=batch_size, workers=workers,
                             device=device, progress=False)["images_per_s"]),  # fmt: skip
                "reference": lambda: ref.append(reference_loop(plain_model, samples, crops, batch_size, workers)),
                "model_limit": lambda: lim.append(model_limit(fast_model, batches, crops)),
            }
            # One untimed pass of each loop first: the first forward at a new batch shape builds the
            # kernels' plans, and whichever loop ran first would otherwise pay for it.
            evaluate(fast_model, metadata, root, crops, limit=2, batch_size=batch_size, workers=workers, device=device, progress=False)
            model_limit(fast_model, batches[:2], crops)
            reference_loop(plain_model, samples[:2], crops, batch_size, workers)
            order = ["toolkit", "model_limit", "reference"]
            cpu: dict[str, list[float]] = {name: [] for name in order}
            for rep in range(repeats):
                if rep and time.perf_counter() - started > budget:
                    break  # the machine is slow (shared): keep --quick bounded
                for name in order if rep % 2 == 0 else order[::-1]:  # alternate, so drifts in load even out
                    before = cpu_seconds()
                    runs[name]()
                    cpu[name].append(1000 * (cpu_seconds() - before) / len(samples))
                print(f"{crops}-crop: toolkit {ours[-1]:.2f}, reference {ref[-1]:.2f}, model limit {lim[-1]:.2f} images/s", file=sys.stderr)
            paired_limit = [o / m for o, m in zip(ours, lim)]
            paired_ref = [o / r for o, r in zip(ours, ref)]
            row = {
                "images": len(samples),
                "batch_size": batch_size,
                "toolkit_images_per_s": max(ours),
                "reference_images_per_s": max(ref),
                "model_limit_images_per_s": max(lim),
                "all_runs": {"toolkit": ours, "reference": ref, "model_limit": lim},
                "paired_ratios": {"vs_model_limit": paired_limit, "vs_reference": paired_ref},
                # CPU time (this process and its reaped DataLoader workers) per image: the work done,
                # which other jobs on a shared machine disturb far less than the wall-clock rate.
                "cpu_ms_per_image": {name: min(values) for name, values in cpu.items()},
                "where_time_goes_ms_per_image": breakdown(samples[:8], fast_model, crops, transform, normalizer),
            }
            results["protocols"][f"{crops}crop"] = row
            # Each repetition runs the three back to back; the median of those paired ratios is
            # steadier on a shared machine than a ratio of separate bests.
            results[f"ratio_vs_reference_{crops}crop"] = statistics.median(paired_ref)
            results[f"ratio_vs_model_limit_{crops}crop"] = statistics.median(paired_limit)
    results["load_average_at_end"] = list(os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for key in ("ratio_vs_reference_1crop", "ratio_vs_reference_10crop", "ratio_vs_model_limit_1crop", "ratio_vs_model_limit_10crop"):
        print(f"{key}: {results[key]:.3f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
