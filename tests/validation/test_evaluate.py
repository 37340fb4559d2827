"""The evaluation loop against computations written here: softmax averaging over ten crops on a model
whose outputs are known, top-k, both data layouts, the mean image, the class-order check, the
awkward files of ImageNet val, and bad images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from resnet_port.checkpoints import CheckpointMetadata, Preprocessing
from resnet_port.errors import InputError
from resnet_port.validation import evaluate
from resnet_port.validation.data import DatasetError, ImageDataset, scan_dataset
from resnet_port.validation.decode import BadImageError, decode_image
from resnet_port.validation.metrics import Tally
from resnet_port.validation.transforms import CropTransform

from .conftest import CLASSES, FOLDER_FILES, KnownModel, TINY_SPEC, ref_crops, ref_resize, tiny_metadata, tiny_model

FAST = dict(workers=0, progress=False)


def known_metadata(**prep) -> CheckpointMetadata:
    return CheckpointMetadata(spec=TINY_SPEC.replace(num_classes=len(CLASSES)), preprocessing=Preprocessing(**prep))


def expected_probs(model: KnownModel, paths, resize, crop, crops, prep: Preprocessing, average="probs") -> np.ndarray:
    """Independent: reference crops -> normalised by hand -> logits by numpy -> softmax -> mean."""
    w = model.fc.weight.detach().double().numpy()
    b = model.fc.bias.detach().double().numpy()
    out = []
    for path in paths:
        x = ref_crops(path, resize, crop, crops).astype(np.float64)  # (N, H, W, 3) RGB
        if prep.channel_order == "BGR":
            x = x[..., ::-1]
        x = x * prep.pixel_max / 255.0
        x = (x - np.array(prep.mean)) / np.array(prep.std)
        logits = x.mean(axis=(1, 2)) @ w.T + b
        if average == "logits":  # the wrong way, for the pitfall test
            logits = logits.mean(axis=0, keepdims=True)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        out.append((e / e.sum(axis=1, keepdims=True)).mean(axis=0))
    return np.stack(out)


def read_predictions(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("crops", [1, 10])
def test_crop_averaging_on_known_model(imagefolder, tmp_path, crops):
    model = KnownModel(len(CLASSES))
    prep = Preprocessing(resize=256, crop=224)
    pred = tmp_path / "pred.jsonl"
    result = evaluate(model, known_metadata(resize=256, crop=224), imagefolder, crops, predictions=pred, batch_size=3, **FAST)
    rows = read_predictions(pred)
    paths = [imagefolder / f / n for f, n, *_ in FOLDER_FILES]
    assert [r["path"] for r in rows] == [str(p) for p in paths]
    expected = expected_probs(model, paths, 256, 224, crops, prep)
    for row, probs in zip(rows, expected):
        order = np.argsort(-probs, kind="stable")[:5]
        assert np.allclose(row["probs"], probs[order], atol=2e-5), (row, probs[order])
        assert set(row["top5"]) == set(order.tolist())
    labels = np.array([CLASSES.index(f) for f, *_ in FOLDER_FILES])
    top1 = (expected.argmax(1) == labels).mean()
    assert result["top1"] == pytest.approx(top1)
    assert result["images"] == len(paths) and result["crops"] == crops


def test_pitfall_averaging_logits_instead_of_probabilities(imagefolder, tmp_path):
    model = KnownModel(len(CLASSES))
    pred = tmp_path / "pred.jsonl"
    evaluate(model, known_metadata(resize=256, crop=224), imagefolder, 10, predictions=pred, **FAST)
    paths = [imagefolder / f / n for f, n, *_ in FOLDER_FILES]
    wrong = expected_probs(model, paths, 256, 224, 10, Preprocessing(), average="logits")
    rows = read_predictions(pred)
    moved = max(abs(r["probs"][0] - w[r["top5"][0]]) for r, w in zip(rows, wrong))
    assert moved > 1e-3, moved


def test_topk_counts_by_hand():
    probs = torch.tensor(
        [
            [0.50, 0.20, 0.10, 0.08, 0.07, 0.05],  # label 0: top-1
            [0.50, 0.20, 0.10, 0.08, 0.07, 0.05],  # label 4: 5th place, top-5 only
            [0.50, 0.20, 0.10, 0.08, 0.07, 0.05],  # label 5: 6th place, neither
            [0.05, 0.07, 0.08, 0.10, 0.20, 0.50],  # label 1: 5th place
        ]
    )
    tally = Tally(6)
    tally.add(probs, torch.tensor([0, 4, 5, 1]))
    assert (tally.images, tally.top1, tally.top5) == (4, 1, 3)
    summary = tally.summary()
    assert summary["top1"] == 0.25 and summary["top5"] == 0.75 and summary["top5_error"] == 0.25
    rows = {r["class"]: r for r in tally.per_class()}
    assert rows[4]["top5"] == 1.0 and rows[5]["top5"] == 0.0 and rows[0]["top1"] == 1.0


def test_both_layouts_give_the_same_predictions(imagefolder, flat_dataset, tmp_path):
    model, meta = tiny_model(), tiny_metadata()
    a = evaluate(model, meta, imagefolder, 1, predictions=tmp_path / "a.jsonl", **FAST)
    root, labels = flat_dataset
    b = evaluate(model, meta, root, 1, labels_file=labels, predictions=tmp_path / "b.jsonl", **FAST)
    rows_a, rows_b = read_predictions(tmp_path / "a.jsonl"), read_predictions(tmp_path / "b.jsonl")
    assert [(r["label"], r["top5"]) for r in rows_a] == [(r["label"], r["top5"]) for r in rows_b]
    assert a["top1"] == b["top1"] and a["top5"] == b["top5"] and b["protocol"]["layout"] == "flat"


def test_imagefolder_labels_are_sorted_wnid_positions(imagefolder):
    index = scan_dataset(imagefolder)
    assert index.classes == sorted(CLASSES)
    for sample in index.samples:
        assert sample.label == sorted(CLASSES).index(sample.path.parent.name)
    full = ["n00000000"] + CLASSES + ["n99999999"]  # a class list maps folders by name
    index = scan_dataset(imagefolder, classes=full)
    assert {s.path.parent.name: s.label for s in index.samples} == {c: full.index(c) for c in CLASSES}


def test_flat_labels_file_found_beside_images(tmp_path, imagefolder):
    root = tmp_path / "flat"
    root.mkdir()
    src = imagefolder / "n07920052" / "coffee.JPEG"
    (root / "x.JPEG").write_bytes(src.read_bytes())
    (root / "val.txt").write_text("x.JPEG 967\n")
    index = scan_dataset(root)
    assert index.layout == "flat" and index.samples[0].label == 967


def test_awkward_files_decode_to_rgb(imagefolder):
    for name, mode in [("camera_gray.JPEG", "L"), ("rocket_cmyk.JPEG", "CMYK"), ("coffee_png_inside.JPEG", "RGB")]:
        path = next(imagefolder.glob(f"*/{name}"))
        with Image.open(path) as raw:
            assert raw.mode == mode
            if name.endswith("inside.JPEG"):
                assert raw.format == "PNG"
            expected = np.asarray(raw.convert("RGB"))
        decoded = decode_image(path)
        assert decoded.mode == "RGB" and np.array_equal(np.asarray(decoded), expected)


def test_corrupt_image_is_an_error_unless_skipped(corrupt_folder, tmp_path):
    model, meta = tiny_model(), tiny_metadata()
    with pytest.raises(BadImageError, match="b_truncated.JPEG"):
        evaluate(model, meta, corrupt_folder, 1, **FAST)
    result = evaluate(model, meta, corrupt_folder, 1, skip_bad=True, **FAST)
    assert result["images"] == 2
    assert result["skipped"] == [str(corrupt_folder / "n00000002" / "b_truncated.JPEG")]


def test_bad_data_inputs(tmp_path, imagefolder):
    with pytest.raises(DatasetError, match="no such data folder"):
        scan_dataset(tmp_path / "missing")
    (tmp_path / "empty" / "n01440764").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no images found"):
        scan_dataset(tmp_path / "empty")
    labels = tmp_path / "val.txt"
    labels.write_text("chelsea.JPEG 281\nnot_there.JPEG 5\n")
    with pytest.raises(DatasetError, match=r"not_there.JPEG \(line 2\)"):
        scan_dataset(imagefolder / "n02123045", labels)
    labels.write_text("chelsea.JPEG cat\n")
    with pytest.raises(DatasetError, match=r"val.txt:1: expected"):
        scan_dataset(imagefolder / "n02123045", labels)


def test_label_beyond_model_outputs_is_an_error(imagefolder, tmp_path):
    labels = tmp_path / "val.txt"
    labels.write_text("chelsea.JPEG 1000\n")
    with pytest.raises(InputError, match="class index 1000 is out of range"):
        evaluate(tiny_model(), tiny_metadata(), imagefolder / "n02123045", labels_file=labels, **FAST)


def test_class_order_check_warns(imagefolder, capsys, tmp_path):
    model = tiny_model(num_classes=len(CLASSES))
    meta = tiny_metadata(num_classes=len(CLASSES))
    assert evaluate(model, meta, imagefolder, **FAST)["warnings"] == []
    meta.class_order = "caffe_synset_words_unsorted"
    warnings = evaluate(model, meta, imagefolder, **FAST)["warnings"]
    assert any("class order is 'caffe_synset_words_unsorted'" in w for w in warnings)
    assert "warning:" in capsys.readouterr().err
    meta = tiny_metadata(num_classes=len(CLASSES))
    meta.classes = list(reversed(CLASSES))
    pred = tmp_path / "pred.jsonl"
    result = evaluate(model, meta, imagefolder, predictions=pred, **FAST)
    assert any("not in sorted WordNet-id order" in w for w in result["warnings"])
    # ...and ImageFolder labels then follow the checkpoint's classes, by name.
    for row in read_predictions(pred):
        folder = row["path"].split("/")[-2]
        assert row["label"] == meta.classes.index(folder) != CLASSES.index(folder) or folder == CLASSES[len(CLASSES) // 2]
    # A partial ImageFolder against a 1000-class model: its sorted positions are not class indices.
    warnings = evaluate(tiny_model(), tiny_metadata(), imagefolder, **FAST)["warnings"]
    assert any(f"{len(CLASSES)} class folders and the model 1000 outputs" in w for w in warnings)


def test_result_keys_and_protocol(imagefolder, tmp_path):
    ckpt = tmp_path / "fake.bin"
    ckpt.write_bytes(b"0123456789")
    result = evaluate(tiny_model(), tiny_metadata(), imagefolder, 10, checkpoint=ckpt, per_class=True, limit=3, shuffle_seed=4, **FAST)
    for key in ("top1", "top5", "top1_error", "top5_error", "images", "crops", "protocol", "checkpoint_sha256", "versions", "images_per_s"):
        assert key in result
    assert result["images"] == 3 and 0.0 <= result["top1"] <= result["top5"] <= 1.0
    import hashlib

    assert result["checkpoint_sha256"] == hashlib.sha256(b"0123456789").hexdigest()
    assert result["protocol"]["resize"] == 64 and result["protocol"]["crop"] == 56 and result["protocol"]["crops"] == 10
    assert sum(r["images"] for r in result["per_class"]) == 3


def test_limit_and_shuffle_are_reproducible(imagefolder):
    index = scan_dataset(imagefolder)
    a, b = index.subset(4, 7), index.subset(4, 7)
    assert a.samples == b.samples and len(a.samples) == 4
    assert index.subset(None, 7).samples != index.samples


# -- the mean image ------------------------------------------------------------------------------
def structured_mean(h: int, w: int) -> np.ndarray:
    """A BGR 0-255 mean image with spatial structure, as Caffe's (brighter in the middle)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    bump = 40.0 * np.exp(-(((yy - h / 2) / (h / 3)) ** 2 + ((xx - w / 2) / (w / 3)) ** 2))
    return np.stack([80 + bump + 0.1 * xx, 100 + bump, 120 + bump - 0.1 * yy]).astype(np.float32)


def caffe_prep(mean_image: np.ndarray, **geometry) -> Preprocessing:
    return Preprocessing("BGR", 255.0, None, None, mean_image=mean_image, **geometry)


@pytest.mark.parametrize("crops", [1, 10])
def test_mean_image_subtracted_from_each_crop(imagefolder, crops):
    """Kaiming He's release: Crop(img) - mean, with the 224x224 mean image, every crop alike."""
    mean = structured_mean(224, 224)
    assert CropTransform(caffe_prep(mean), crops).mean_image_mode == "per_crop"
    path = imagefolder / "n02123045" / "chelsea_500x375.JPEG"
    ours = ImageDataset([_sample(path)], CropTransform(caffe_prep(mean), crops), normalize=True)[0][0].numpy()
    ref = ref_crops(path, 256, 224, crops)[..., ::-1].astype(np.float64).transpose(0, 3, 1, 2) - mean[None]
    assert np.abs(ours - ref).max() < 1e-3
    # The pitfall: per-channel means of the mean image instead of the image itself.
    wrong = ref_crops(path, 256, 224, crops)[..., ::-1].astype(np.float64).transpose(0, 3, 1, 2) - mean.mean(axis=(1, 2))[None, :, None, None]
    assert np.abs(ours - wrong).max() > 10


def test_mean_image_of_another_size_follows_the_image_geometry(imagefolder):
    """A 256x256 mean (the older Caffe convention) is resized like the image and cropped with it."""
    mean = structured_mean(256, 256)
    assert CropTransform(caffe_prep(mean), 10).mean_image_mode == "image_geometry"
    path = imagefolder / "n07920052" / "coffee.JPEG"  # 600x400 -> 384x256
    ours = ImageDataset([_sample(path)], CropTransform(caffe_prep(mean), 10), normalize=True)[0][0].numpy()
    w, h = ref_resize(decode_image(path), 256).size
    # Independent resize of the mean: Pillow's float images, one channel at a time.
    resized = np.stack([np.asarray(Image.fromarray(c, mode="F").resize((w, h), Image.Resampling.BILINEAR)) for c in mean])
    pixels = ref_crops(path, 256, 224, 10)[..., ::-1].astype(np.float64).transpose(0, 3, 1, 2)
    boxes = [(0, 0), (0, w - 224), (h - 224, 0), (h - 224, w - 224), (16, int(round((w - 224) / 2)))]
    mean_crops = [resized[:, t : t + 224, l : l + 224] for t, l in boxes]
    flipped = resized[:, :, ::-1]
    mean_crops += [flipped[:, t : t + 224, l : l + 224] for t, l in boxes]
    ref = pixels - np.stack(mean_crops)
    assert np.abs(ours - ref).max() < 0.05
    # Subtracting the mean's center crop instead (ignoring the geometry) moves the corners.
    wrong = pixels - mean[:, 16:240, 16:240][None]
    assert np.abs(ours - wrong).max() > 5


def test_mean_image_of_a_third_size_is_resized_to_the_crop(imagefolder):
    """A 227x227 mean with 224 crops: resized to 224 once, then subtracted from each crop."""
    mean = structured_mean(227, 227)
    prep = caffe_prep(mean)
    assert CropTransform(prep, 10).mean_image_mode == "resized_to_crop"
    path = imagefolder / "n03773504" / "rocket.JPEG"
    ours = ImageDataset([_sample(path)], CropTransform(prep, 10), normalize=True)[0][0].numpy()
    resized = np.stack([np.asarray(Image.fromarray(c, mode="F").resize((224, 224), Image.Resampling.BILINEAR)) for c in mean])
    ref = ref_crops(path, 256, 224, 10)[..., ::-1].astype(np.float64).transpose(0, 3, 1, 2) - resized[None]
    assert np.abs(ours - ref).max() < 0.05
    wrong = ref_crops(path, 256, 224, 10)[..., ::-1].astype(np.float64).transpose(0, 3, 1, 2) - mean[None, :, :224, :224]
    assert np.abs(ours - wrong).max() > 1


def test_mean_and_std_values(imagefolder):
    prep = Preprocessing("RGB", 1.0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    path = imagefolder / "n03773504" / "rocket.JPEG"
    ours = ImageDataset([_sample(path)], CropTransform(prep, 1), normalize=True)[0][0].numpy()
    ref = (ref_crops(path, 256, 224, 1) / 255.0 - np.array(prep.mean)) / np.array(prep.std)
    assert np.abs(ours - ref.transpose(0, 3, 1, 2)).max() < 1e-5


def _sample(path):
    from resnet_port.validation.data import Sample

    return Sample(path, 0)


def test_mean_image_through_the_evaluation_loop(imagefolder, tmp_path):
    """The batched path (workers' mean crops, collate, normalise on the device) on a known model."""
    mean = structured_mean(256, 256)
    path = imagefolder / "n07920052" / "coffee.JPEG"
    labels = tmp_path / "val.txt"
    labels.write_text("coffee.JPEG 2\n")
    model = KnownModel(len(CLASSES))
    meta = CheckpointMetadata(spec=TINY_SPEC.replace(num_classes=len(CLASSES)), preprocessing=caffe_prep(mean))
    pred = tmp_path / "p.jsonl"
    evaluate(model, meta, path.parent, 10, labels_file=labels, predictions=pred, workers=1, progress=False)
    w, h = ref_resize(decode_image(path), 256).size
    resized = np.stack([np.asarray(Image.fromarray(c, mode="F").resize((w, h), Image.Resampling.BILINEAR)) for c in mean])
    boxes = [(0, 0), (0, w - 224), (h - 224, 0), (h - 224, w - 224), (16, int(round((w - 224) / 2)))]
    mean_crops = [resized[:, t : t + 224, l : l + 224] for t, l in boxes]
    mean_crops += [resized[:, :, ::-1][:, t : t + 224, l : l + 224] for t, l in boxes]
    x = ref_crops(path, 256, 224, 10)[..., ::-1].astype(np.float64).transpose(0, 3, 1, 2) - np.stack(mean_crops)
    logits = x.mean(axis=(2, 3)) @ model.fc.weight.detach().double().numpy().T + model.fc.bias.detach().double().numpy()
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = (e / e.sum(axis=1, keepdims=True)).mean(axis=0)
    row = read_predictions(pred)[0]
    assert np.allclose(row["probs"], probs[row["top5"]], atol=1e-4)
    assert row["top5"][0] == int(probs.argmax())


def test_each_image_decoded_once_for_ten_crops(imagefolder, monkeypatch):
    import resnet_port.validation.data as data_module

    calls = []
    real = data_module.decode_image
    monkeypatch.setattr(data_module, "decode_image", lambda path: calls.append(path) or real(path))
    result = evaluate(tiny_model(), tiny_metadata(), imagefolder, 10, **FAST)
    assert result["images"] == len(FOLDER_FILES) and sorted(calls) == sorted(set(calls)) and len(calls) == len(FOLDER_FILES)


def test_real_caffe_mean_image_against_per_channel_values(imagefolder):
    """The release's own ResNet_mean.binaryproto (224x224 BGR; it strays up to ~13 levels from its
    channel means): subtracted per crop it matches the by-hand computation, and the usual shortcut
    (104, 117, 123) moves the model's input well beyond float tolerance."""
    from resnet_port.converters.caffe.binaryproto import read_binaryproto
    from tests.shared_dir import shared_file

    mean_file = shared_file("reference", "caffe", "ResNet_mean.binaryproto")
    mean = read_binaryproto(mean_file).reshape(3, 224, 224)
    path = imagefolder / "n03773504" / "rocket_cmyk.JPEG"
    ours = ImageDataset([_sample(path)], CropTransform(caffe_prep(mean), 10), normalize=True)[0][0].numpy()
    pixels = ref_crops(path, 256, 224, 10)[..., ::-1].astype(np.float64).transpose(0, 3, 1, 2)
    assert np.abs(ours - (pixels - mean[None])).max() < 1e-3
    shortcut = Preprocessing("BGR", 255.0, (104.0, 117.0, 123.0), None)
    values = ImageDataset([_sample(path)], CropTransform(shortcut, 10), normalize=True)[0][0].numpy()
    assert np.abs(ours - values).max() > 10
