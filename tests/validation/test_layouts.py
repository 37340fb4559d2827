"""The ImageNet layouts people download, each label mapped onto the checkpoint's class order:
the official val images with the devkit (a PERMUTED meta.mat written here with scipy.io in the
devkit's own structure, so that taking ILSVRC2012_ID - 1 as the class index fails), Kaggle's CSV and
synset mapping, and the val tar read in place by DataLoader workers.  Expected labels are computed
here from the WordNet ids the test assigned, never from the code under test."""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from resnet_port.checkpoints import save_checkpoint
from resnet_port.validation import evaluate
from resnet_port.validation import sources as sources_module
from resnet_port.validation.cli import main
from resnet_port.validation.data import DatasetError, scan_dataset

from .conftest import FOLDER_FILES, tiny_metadata, tiny_model

FAST = ["--workers", "0", "--no-progress", "--device", "cpu"]
# The leaf classes of the test's devkit: the photos' four WordNet ids and eight more.
LEAVES = sorted({f for f, *_ in FOLDER_FILES} | {f"n0{k}00000{k}" for k in range(1, 9)})
N = len(LEAVES)  # the models here have N outputs


def devkit_ids() -> dict[str, int]:
    """WNID -> ILSVRC2012_ID, a permutation of the sorted order without a fixed point (the real
    devkit's differs from the sorted order too: its ID 1 is n02119789, sorted class 278)."""
    mapping = {w: (5 * i + 3) % N + 1 for i, w in enumerate(LEAVES)}
    assert sorted(mapping.values()) == list(range(1, N + 1))
    assert all(mapping[w] - 1 != i for i, w in enumerate(LEAVES))  # the mapping matters for every class
    return mapping


def write_meta_mat(path: Path, ids: dict[str, int]) -> None:
    """``synsets`` as the real data/meta.mat holds it: an (n, 1) struct array with the devkit's fields,
    rows in ILSVRC2012_ID order, leaves first, then inner nodes (num_children > 0) with higher IDs."""
    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height", "num_train_images"]
    rows = [(i, w, f"words of {w}", f"gloss of {w}", 0, np.zeros((1, 0)), 0, 1300) for w, i in sorted(ids.items(), key=lambda kv: kv[1])]
    rows += [(N + 1, "n09999999", "inner", "an inner node", 2, np.array([[1, 2]]), 1, 0),
             (N + 2, "n00001740", "entity", "the root", 1, np.array([[N + 1]]), 2, 0)]  # fmt: skip
    synsets = np.zeros((len(rows), 1), dtype=[(f, object) for f in fields])
    for r, row in enumerate(rows):
        for f, value in zip(fields, row):
            synsets[r, 0][f] = np.array([[value]], dtype=np.uint16) if isinstance(value, int) else value
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"synsets": synsets})


@pytest.fixture(scope="module")
def official(flat_dataset, tmp_path_factory):
    """The official layout: flat ILSVRC2012_val_*.JPEG, a devkit folder and its .tar.gz."""
    root, _ = flat_dataset
    base = tmp_path_factory.mktemp("official")
    kit = base / "ILSVRC2012_devkit_t12"
    ids = devkit_ids()
    write_meta_mat(kit / "data" / "meta.mat", ids)
    wnids = [folder for folder, *_ in FOLDER_FILES]  # image i (1-based) shows FOLDER_FILES[i - 1]
    (kit / "data" / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{ids[w]}\n" for w in wnids))
    archive = base / "ILSVRC2012_devkit_t12.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(kit, arcname="ILSVRC2012_devkit_t12")
    return {"root": root, "kit": kit, "archive": archive, "ids": ids, "wnids": wnids,
            "truth": kit / "data" / "ILSVRC2012_validation_ground_truth.txt"}  # fmt: skip


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """An N-class checkpoint without a class list: labels follow the sorted-WNID order."""
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    model = tiny_model(num_classes=N)
    save_checkpoint(path, model.spec, model.state_dict(), tiny_metadata(N))
    return path


@pytest.fixture(scope="module")
def ckpt_with_classes(tmp_path_factory):
    """An N-class checkpoint whose own classes are in another (reversed) order."""
    path = tmp_path_factory.mktemp("ckpt") / "classes.safetensors"
    model = tiny_model(num_classes=N)
    meta = tiny_metadata(N)
    meta.classes = list(reversed(LEAVES))
    save_checkpoint(path, model.spec, model.state_dict(), meta)
    return path


def labels_of(pred: Path) -> dict[str, int]:
    return {Path(r["path"]).name: r["label"] for r in map(json.loads, pred.read_text().splitlines())}


def one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.strip()]
    errors = [line for line in err if "error:" in line]
    assert len(errors) == 1 and err[-1] == errors[0], err
    return errors[0]


# -- the devkit -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kit_kind", ["folder", "archive"])
def test_devkit_ground_truth_is_mapped_through_meta_mat(official, ckpt, tmp_path, kit_kind):
    pred = tmp_path / "p.jsonl"
    kit = official[kit_kind if kit_kind == "archive" else "kit"]
    args = [str(ckpt), "--data", str(official["root"]), "--labels", str(official["truth"]), "--devkit", str(kit)]
    assert main([*args, "--predictions", str(pred), "--json", str(tmp_path / "r.json"), *FAST]) == 0
    expected = {f"ILSVRC2012_val_{i:08d}.JPEG": LEAVES.index(w) for i, w in enumerate(official["wnids"], 1)}
    assert labels_of(pred) == expected
    # The classic mistake, ID - 1, would label every image otherwise.
    naive = {f"ILSVRC2012_val_{i:08d}.JPEG": official["ids"][w] - 1 for i, w in enumerate(official["wnids"], 1)}
    assert all(naive[k] != expected[k] for k in expected)
    protocol = json.loads((tmp_path / "r.json").read_text())["protocol"]
    assert protocol["layout"] == "devkit" and protocol["labels_mapped_by_name"] is True


def test_devkit_alone_uses_its_own_ground_truth(official, ckpt, tmp_path):
    pred = tmp_path / "p.jsonl"
    assert main([str(ckpt), "--data", str(official["root"]), "--devkit", str(official["archive"]), "--predictions", str(pred), *FAST]) == 0
    assert labels_of(pred) == {f"ILSVRC2012_val_{i:08d}.JPEG": LEAVES.index(w) for i, w in enumerate(official["wnids"], 1)}


def test_devkit_labels_follow_the_checkpoints_own_classes(official, ckpt_with_classes, tmp_path):
    pred = tmp_path / "p.jsonl"
    args = [str(ckpt_with_classes), "--data", str(official["root"]), "--labels", str(official["truth"]), "--devkit", str(official["kit"])]
    assert main([*args, "--predictions", str(pred), *FAST]) == 0
    order = list(reversed(LEAVES))
    assert labels_of(pred) == {f"ILSVRC2012_val_{i:08d}.JPEG": order.index(w) for i, w in enumerate(official["wnids"], 1)}


def test_ground_truth_without_devkit_is_an_error(official, ckpt, capsys):
    assert main([str(ckpt), "--data", str(official["root"]), "--labels", str(official["truth"]), *FAST]) == 2
    line = one_error_line(capsys)
    assert str(official["truth"]) in line and "--devkit" in line


def test_bad_devkit_files(official, ckpt, tmp_path, capsys):
    truth = tmp_path / "gt.txt"
    truth.write_text("1\n2\n3\nx7\n")
    assert main([str(ckpt), "--data", str(official["root"]), "--labels", str(truth), "--devkit", str(official["kit"]), *FAST]) == 2
    assert f"{truth}:4:" in one_error_line(capsys)
    truth.write_text("1\n2\n999\n")
    assert main([str(ckpt), "--data", str(official["root"]), "--labels", str(truth), "--devkit", str(official["kit"]), *FAST]) == 2
    line = one_error_line(capsys)
    assert f"{truth}:3:" in line and "999" in line
    not_mat = tmp_path / "kit" / "data" / "meta.mat"
    not_mat.parent.mkdir(parents=True)
    scipy.io.savemat(not_mat, {"something": np.zeros(3)})
    assert main([str(ckpt), "--data", str(official["root"]), "--labels", str(official["truth"]), "--devkit", str(not_mat.parents[1]), *FAST]) == 2
    assert "meta.mat" in one_error_line(capsys)


# -- Kaggle ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def kaggle(flat_dataset, tmp_path_factory):
    root, _ = flat_dataset
    base = tmp_path_factory.mktemp("kaggle")
    val = base / "ILSVRC" / "Data" / "CLS-LOC" / "val"
    shutil.copytree(root, val)
    rows = [(f"ILSVRC2012_val_{i:08d}", folder) for i, (folder, *_rest) in enumerate(FOLDER_FILES, 1)]
    random.Random(2).shuffle(rows)  # the real CSV is not in file order
    lines = ["ImageId,PredictionString"]
    for k, (image, wnid) in enumerate(rows):
        boxes = f"{wnid} 10 20 110 220 " + (f"{wnid} 5 6 50 60 " if k % 2 else "")
        lines.append(f"{image},{boxes}")
    solution = base / "LOC_val_solution.csv"
    solution.write_text("\n".join(lines) + "\n")
    mapping = base / "LOC_synset_mapping.txt"
    mapping.write_text("".join(f"{w} words of {w}, more words\n" for w in LEAVES))
    return {"val": val, "solution": solution, "mapping": mapping}


def test_kaggle_layout(kaggle, ckpt, ckpt_with_classes, tmp_path):
    pred = tmp_path / "p.jsonl"
    args = ["--data", str(kaggle["val"]), "--labels", str(kaggle["solution"]), "--classes", str(kaggle["mapping"])]
    assert main([str(ckpt), *args, "--predictions", str(pred), "--json", str(tmp_path / "r.json"), *FAST]) == 0
    expected = {f"ILSVRC2012_val_{i:08d}.JPEG": LEAVES.index(f) for i, (f, *_rest) in enumerate(FOLDER_FILES, 1)}
    assert labels_of(pred) == expected
    assert json.loads((tmp_path / "r.json").read_text())["protocol"]["layout"] == "kaggle"
    # A checkpoint with its own class order: the WNIDs are mapped onto it, not onto the mapping file's.
    assert main([str(ckpt_with_classes), *args, "--predictions", str(pred), *FAST]) == 0
    order = list(reversed(LEAVES))
    assert labels_of(pred) == {k: order.index(LEAVES[v]) for k, v in expected.items()}


def test_kaggle_bad_rows_name_the_line(kaggle, ckpt, tmp_path, capsys):
    bad = tmp_path / "LOC_val_solution.csv"
    text = kaggle["solution"].read_text().splitlines()
    text[2] = "ILSVRC2012_val_00000003,10 20 30 40"
    bad.write_text("\n".join(text) + "\n")
    args = ["--data", str(kaggle["val"]), "--labels", str(bad), "--classes", str(kaggle["mapping"])]
    assert main([str(ckpt), *args, *FAST]) == 2
    assert f"{bad}:3:" in one_error_line(capsys)
    text[2] = "ILSVRC2012_val_00000003,n07777777 1 2 3 4"
    bad.write_text("\n".join(text) + "\n")
    assert main([str(ckpt), *args, *FAST]) == 2
    line = one_error_line(capsys)
    assert f"{bad}:3:" in line and "n07777777" in line


@pytest.mark.parametrize(
    "content,line",
    [("image_1.JPEG\tcat\n", 1), ("# comment\n\nsome words here at line three\n", 3), ("ImageId;PredictionString\n", 1), ("a.JPEG 3\nb.JPEG\n", 2)],
    ids=["word_label", "prose", "semicolon_csv", "caffe_then_bad_line"],
)
def test_unknown_labels_format_is_one_line_naming_the_line(official, ckpt, tmp_path, capsys, content, line):
    labels = tmp_path / "labels.txt"
    labels.write_text(content)
    assert main([str(ckpt), "--data", str(official["root"]), "--labels", str(labels), *FAST]) == 2
    assert f"{labels}:{line}: expected" in one_error_line(capsys)


# -- the val tar, read in place -------------------------------------------------------------------
def write_tar(path: Path, files: dict[str, Path], compress: str = "") -> Path:
    with tarfile.open(path, "w:" + compress) as tar:
        for name, src in files.items():
            tar.add(src, arcname=name)
    return path


@pytest.fixture(scope="module")
def val_tar(official, tmp_path_factory):
    root = official["root"]
    files = {p.name: p for p in sorted(root.iterdir())}
    return write_tar(tmp_path_factory.mktemp("tar") / "ILSVRC2012_img_val.tar", files)


def test_val_tar_read_in_place_by_workers_equals_the_folder(official, val_tar, tmp_path):
    model, meta = tiny_model(num_classes=N), tiny_metadata(N)
    common = dict(labels_file=official["truth"], devkit=official["kit"], crops=10, progress=False)
    folder = evaluate(model, meta, official["root"], predictions=tmp_path / "a.jsonl", workers=0, **common)
    sources_module._OPEN.clear()
    inplace = evaluate(model, meta, val_tar, predictions=tmp_path / "b.jsonl", workers=2, batch_size=2, **common)
    # The workers opened the tar; this process never read a member.
    assert not any(pid == os.getpid() for pid, _ in sources_module._OPEN)
    assert inplace["protocol"]["source"] == "tar" and inplace["images"] == folder["images"] == len(FOLDER_FILES)
    a = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert [Path(r["path"]).name for r in a] == [Path(r["path"]).name for r in b]
    assert all(r["path"].startswith(str(val_tar.resolve())) for r in b)
    for x, y in zip(a, b):
        assert (x["label"], x["top5"]) == (y["label"], y["top5"]) and x["probs"] == pytest.approx(y["probs"], abs=1e-6)
    assert inplace["top1"] == folder["top1"] and inplace["top5"] == folder["top5"]


def test_member_bytes_are_the_files(official, val_tar):
    index = scan_dataset(val_tar, official["truth"], devkit=official["kit"])
    for sample in index.samples:
        assert sources_module.read_member(sample.member) == (official["root"] / sample.path.name).read_bytes()


def test_imagefolder_tar(imagefolder, tmp_path):
    files = {f"{folder}/{name}": imagefolder / folder / name for folder, name, *_ in FOLDER_FILES}
    tar = write_tar(tmp_path / "val.tar", files)
    index = scan_dataset(tar)
    assert index.layout == "imagefolder" and index.source == "tar"
    classes = sorted({f for f, *_ in FOLDER_FILES})
    assert sorted((s.path.name, s.label) for s in index.samples) == sorted((n, classes.index(f)) for f, n, *_ in FOLDER_FILES)


@pytest.mark.parametrize("wrapper", ["ILSVRC2012_img_val/", "./data/val/"])
def test_tar_of_one_wrapper_folder_reads_as_that_folder(official, imagefolder, tmp_path, wrapper):
    flat = write_tar(tmp_path / "flat.tar", {wrapper + p.name: p for p in sorted(official["root"].iterdir())})
    index = scan_dataset(flat, official["truth"], devkit=official["kit"])
    assert sorted(s.path.name for s in index.samples) == sorted(p.name for p in official["root"].iterdir())
    assert all(str(s.path).startswith(str(flat.resolve() / wrapper.strip("./"))) for s in index.samples)
    nested = write_tar(tmp_path / "nested.tar", {f"{wrapper}{f}/{n}": imagefolder / f / n for f, n, *_ in FOLDER_FILES})
    index = scan_dataset(nested)
    assert index.layout == "imagefolder" and index.folders == sorted({f for f, *_ in FOLDER_FILES})
    # One class folder alone stays a class folder (a WordNet id is never taken for a wrapper).
    single = write_tar(tmp_path / "single.tar", {f"n02123045/{n}": imagefolder / f / n for f, n, *_ in FOLDER_FILES if f == "n02123045"})
    assert scan_dataset(single).folders == ["n02123045"]


def test_compressed_or_flat_tar_without_labels_is_an_error(official, val_tar, tmp_path, ckpt, capsys):
    gz = write_tar(tmp_path / "val.tar.gz", {p.name: p for p in sorted(official["root"].iterdir())}, "gz")
    assert main([str(ckpt), "--data", str(gz), "--labels", str(official["truth"]), "--devkit", str(official["kit"]), *FAST]) == 2
    line = one_error_line(capsys)
    assert str(gz) in line and "gzip-compressed" in line
    with pytest.raises(DatasetError, match="--labels"):
        scan_dataset(val_tar)


def test_truncated_tar(official, tmp_path, capsys, ckpt):
    """Cut inside its last member: the index sees it (exit 2, naming the tar); a member cut after
    indexing reads as a bad image naming the member."""
    tar = write_tar(tmp_path / "t.tar", {p.name: p for p in sorted(official["root"].iterdir())})
    index = scan_dataset(tar, official["truth"], devkit=official["kit"])
    last = max(index.samples, key=lambda s: s.member.offset)
    with open(tar, "r+b") as handle:
        handle.truncate(last.member.offset + last.member.size // 2)
    assert main([str(ckpt), "--data", str(tar), "--labels", str(official["truth"]), "--devkit", str(official["kit"]), *FAST]) == 2
    line = one_error_line(capsys)
    assert str(tar) in line and "truncated" in line
    from resnet_port.validation.data import ImageDataset
    from resnet_port.validation.transforms import CropTransform

    item = ImageDataset([last], CropTransform(tiny_metadata(N).preprocessing))[0]
    assert item.error is not None and last.path.name in item.error and "tar ends inside" in item.error


def test_meta_mat_round_trip_is_the_devkit_structure(tmp_path):
    """The file the tests write has the real devkit's shape: (n, 1) struct 'synsets' with its fields."""
    write_meta_mat(tmp_path / "meta.mat", devkit_ids())
    raw = scipy.io.loadmat(tmp_path / "meta.mat")["synsets"]
    assert raw.shape == (N + 2, 1) and raw.dtype.names[:2] == ("ILSVRC2012_ID", "WNID")
    assert io.BytesIO((tmp_path / "meta.mat").read_bytes()).read(10).startswith(b"MATLAB")


def test_parity_on_a_flat_tar_without_labels(official, val_tar):
    from resnet_port.validation import compare_checkpoints

    a = compare_checkpoints(tiny_model(0, N), tiny_metadata(N), tiny_model(1, N), tiny_metadata(N), val_tar, workers=1, progress=False)
    b = compare_checkpoints(tiny_model(0, N), tiny_metadata(N), tiny_model(1, N), tiny_metadata(N), official["root"], workers=0, progress=False)
    assert a["images"] == b["images"] == len(FOLDER_FILES)
    assert a["top1_agreement"] == b["top1_agreement"] and a["max_abs_diff"] == pytest.approx(b["max_abs_diff"], rel=1e-6)


def test_wordnet_id_labels_need_a_class_order(kaggle, ckpt, capsys):
    """Kaggle's CSV without --classes, on a checkpoint without classes: no order to map onto."""
    assert main([str(ckpt), "--data", str(kaggle["val"]), "--labels", str(kaggle["solution"]), *FAST]) == 2
    line = one_error_line(capsys)
    assert f"{kaggle['solution']}:2:" in line and "--classes" in line


def test_caffe_val_txt_with_wordnet_ids(official, kaggle, ckpt, tmp_path):
    labels = tmp_path / "val.txt"
    labels.write_text("".join(f"ILSVRC2012_val_{i:08d}.JPEG {w}\n" for i, w in enumerate(official["wnids"], 1)))
    index = scan_dataset(official["root"], labels, classes=[line.split()[0] for line in kaggle["mapping"].read_text().splitlines()])
    assert index.layout == "flat" and index.mapped_by_name
    assert [s.label for s in index.samples] == [LEAVES.index(w) for w in official["wnids"]]
