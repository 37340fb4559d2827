"""A tiny ImageNet-layout folder of real photos, for the demo and for quick end-to-end runs.

The photos are scikit-image's bundled sample images (public-domain or CC0, shipped inside its wheel,
so nothing is downloaded), written as JPEGs in Caffe's flat layout: ``ILSVRC2012_val_*.JPEG`` files
and a ``val.txt`` with the ImageNet-1k class index (sorted-WordNet-id order) of what each shows.
The grayscale one is kept grayscale, as ImageNet val has such files.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from resnet_port.errors import InputError

# (scikit-image file, ImageNet-1k index, WordNet id, class name): best-fitting class of each photo.
SAMPLE_PHOTOS: tuple[tuple[str, int, str, str], ...] = (
    ("chelsea.png", 281, "n02123045", "tabby cat"),
    ("coffee.png", 967, "n07920052", "espresso"),
    ("rocket.jpg", 657, "n03773504", "missile"),
    ("camera.png", 872, "n04485082", "tripod"),
)


def skimage_data_dir() -> Path:
    """Where scikit-image keeps its bundled photos (a dependency of the toolkit for this demo)."""
    try:
        import skimage.data
    except ImportError as exc:
        raise InputError("the sample photos come from scikit-image: pip install scikit-image") from exc
    return Path(skimage.data.__file__).parent


def make_sample_dataset(dest_dir: str | Path, quality: int = 90) -> Path:
    """Write the sample photos and their ``val.txt`` into ``dest_dir`` (created); return it.

    ``validate CKPT --data DEST`` then reads it as the flat layout (``val.txt`` is found there).
    """
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    source = skimage_data_dir()
    lines, notes = [], []
    for number, (name, label, wnid, title) in enumerate(SAMPLE_PHOTOS, 1):
        path = source / name
        if not path.is_file():
            raise InputError(f"{path}: scikit-image's sample photo is missing from its installation")
        with Image.open(path) as image:
            image = image.convert("L" if image.mode in ("L", "I", "I;16") else "RGB")
        out = f"ILSVRC2012_val_{number:08d}.JPEG"
        image.save(dest / out, "JPEG", quality=quality)
        lines.append(f"{out} {label}")
        notes.append(f"{out} {label} {wnid} {title} (scikit-image {name})")
    (dest / "val.txt").write_text("\n".join(lines) + "\n")
    (dest / "README.txt").write_text("\n".join(notes) + "\n")
    return dest


def run_sample_validation(model, metadata, work_dir: str | Path, crops: int = 10, progress: bool = False) -> dict:
    """The demo's short run: write the sample photos into ``work_dir`` and evaluate ``model`` on them
    with ``crops`` crops (one process, no workers: four images do not repay starting any)."""
    from resnet_port.validation.evaluate import evaluate

    folder = make_sample_dataset(Path(work_dir))
    return evaluate(model, metadata, folder, crops, workers=0, progress=progress, device="cpu")
