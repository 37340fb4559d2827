"""ImageNet evaluation that reproduces the published protocols: 1-crop and 10-crop, torchvision's
resize and crop geometry, preprocessing from the checkpoint's metadata.

Public API:

- `evaluate(model, metadata, data_dir, crops=1, ...) -> dict`: the ``validate`` result.
- `compare_checkpoints(model_a, meta_a, model_b, meta_b, data_dir)`: parity of two ports, no labels.
- `PROTOCOLS`, `resolve_geometry(preprocessing, protocol)`: each source's own resize and crop.
- `read_devkit(devkit)`: the ILSVRC2012 devkit's ILSVRC2012_ID -> WordNet id mapping.
- `make_sample_dataset(dest_dir) -> Path`: a tiny flat-layout folder of real photos (scikit-image's);
  `run_sample_validation(model, metadata, work_dir, crops=10) -> dict`: the demo's short run on it.
- Preprocessed crops for a checkpoint's metadata, for anything that feeds images to a model:
  `make_dataset(data_dir, metadata.preprocessing, crops=1)` (a torch ``Dataset`` of
  ``(float crops (N, C, H, W), label)``), `ImageDataset(samples, CropTransform(...), normalize=True)`,
  `preprocess_image(path, preprocessing, crops=1)`, and the parts: `scan_dataset`, `decode_image`,
  `CropTransform`, `Normalizer`, `crop_boxes`, `resize_shorter`.
- `published_for(arch)`: the published errors for a registered architecture.
"""

from resnet_port.validation.data import (
    DatasetIndex,
    ImageDataset,
    Sample,
    class_order_warnings,
    make_dataset,
    preprocess_image,
    read_class_list,
    scan_dataset,
)
from resnet_port.validation.decode import BadImageError, decode_image
from resnet_port.validation.devkit import read_devkit
from resnet_port.validation.evaluate import evaluate
from resnet_port.validation.parity import compare_checkpoints
from resnet_port.validation.protocols import PROTOCOLS, resolve_geometry
from resnet_port.validation.metrics import Tally, average_crop_probabilities, topk_hits
from resnet_port.validation.published import PUBLISHED, PublishedResult, published_for
from resnet_port.validation.sample import make_sample_dataset, run_sample_validation
from resnet_port.validation.transforms import CropBox, CropSet, CropTransform, Normalizer, crop_boxes, resize_shorter, resized_size

__all__ = [
    "PROTOCOLS",
    "PUBLISHED",
    "BadImageError",
    "CropBox",
    "CropSet",
    "CropTransform",
    "DatasetIndex",
    "ImageDataset",
    "Normalizer",
    "PublishedResult",
    "Sample",
    "Tally",
    "average_crop_probabilities",
    "class_order_warnings",
    "compare_checkpoints",
    "crop_boxes",
    "decode_image",
    "evaluate",
    "make_dataset",
    "make_sample_dataset",
    "preprocess_image",
    "published_for",
    "read_class_list",
    "read_devkit",
    "resolve_geometry",
    "resize_shorter",
    "run_sample_validation",
    "resized_size",
    "scan_dataset",
    "topk_hits",
]
