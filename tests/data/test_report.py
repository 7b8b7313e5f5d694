"""`yolo4 dataset check` makes the loader's judgement on every image: it decodes them all (in
threads) and names each one that fails; a damaged copy of a real dataset is named file by file
and still trains."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from yolo4.cli import main
from yolo4.data.dataset import load_dataset
from yolo4.data.report import decode_images

KANGAROO = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "kangaroo"


def _yolo_set(root: Path, n: int = 6) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for k in range(n):
        img = np.full((48, 64, 3), 30 * k, np.uint8)
        assert cv2.imwrite(str(root / "images" / f"{k}.jpg"), img)
        (root / "labels" / f"{k}.txt").write_text("0 0.5 0.5 0.25 0.25\n")
    (root / "classes.txt").write_text("thing\n")
    return root


def test_check_decodes_every_image_and_names_the_truncated_one(tmp_path, capsys):
    root = _yolo_set(tmp_path / "d")
    data = (root / "images" / "3.jpg").read_bytes()
    (root / "images" / "3.jpg").write_bytes(data[: len(data) - 40])  # the header is intact: only decoding finds it
    assert main(["dataset", "check", str(root), "--fast"]) == 0
    out = capsys.readouterr().out
    assert "image headers read only (--fast)" in out and "no problems found" in out
    assert main(["dataset", "check", str(root), "--workers", "2"]) == 1
    out = capsys.readouterr().out
    assert "every image decoded: 1 cannot be (training skips them)" in out
    assert "3.jpg: not a readable image: a truncated or corrupt JPEG file -> training skips it" in out
    # the check and the loader agree: the image the check names is the one loading refuses
    ds = load_dataset(root, "all", progress=False)
    problems, rotated = decode_images(ds, workers=1, progress=False)
    assert rotated == 0 and len(problems) == 1
    bad = [i for i in range(len(ds)) if ds.image_paths[i].name == "3.jpg"]
    with pytest.raises(Exception, match="3.jpg"):
        ds.load(bad[0])


def _kangaroo_copy(dest: Path, n: int = 16) -> Path:
    """The first n images of the kangaroo set (VOC layout, no image sets: split 90/10)."""
    if not (KANGAROO / "README.md").is_file():
        pytest.skip(f"the kangaroo dataset is not at {KANGAROO} (only present in the project's workspace)")
    ids = sorted(p.stem for p in (KANGAROO / "annotations").glob("*.xml"))[:n]
    (dest / "images").mkdir(parents=True)
    (dest / "annotations").mkdir()
    for i in ids:
        shutil.copy(KANGAROO / "images" / f"{i}.jpg", dest / "images")
        shutil.copy(KANGAROO / "annotations" / f"{i}.xml", dest / "annotations")
    return dest


def test_a_damaged_real_dataset_is_fully_named_and_trains(tmp_path, capsys):
    root = _kangaroo_copy(tmp_path / "kangaroo")
    ids = sorted(p.stem for p in (root / "annotations").glob("*.xml"))
    ann, img = root / "annotations", root / "images"
    # 1. a JPEG cut to 300 bytes (its xml gives the size, so only decoding finds it)
    (img / f"{ids[0]}.jpg").write_bytes((img / f"{ids[0]}.jpg").read_bytes()[:300])
    # 2. a box outside the image
    xml = (ann / f"{ids[1]}.xml").read_text()
    w = int(xml.split("<width>")[1].split("<")[0])
    start = xml.index("<xmax>") + len("<xmax>")
    (ann / f"{ids[1]}.xml").write_text(xml[:start] + str(w + 100) + xml[xml.index("</xmax>") :])
    # 3. malformed xml
    (ann / f"{ids[2]}.xml").write_text((ann / f"{ids[2]}.xml").read_text()[:150])
    # 4. a label without its image, 5. an image without its label
    (img / f"{ids[3]}.jpg").unlink()
    (ann / f"{ids[4]}.xml").unlink()
    # 6. a path escaping the dataset
    xml = (ann / f"{ids[5]}.xml").read_text()
    (ann / f"{ids[5]}.xml").write_text(
        xml.replace(f"<filename>{ids[5]}.jpg</filename>", "<filename>../../../../etc/passwd</filename>")
    )

    assert main(["dataset", "check", str(root)]) == 1
    out = capsys.readouterr().out
    named = {
        "truncated JPEG": f"{ids[0]}.jpg: truncated or corrupt image header",
        "box outside the image": f"{ids[1]}.xml: object #0 (kangaroo): box xyxy=",
        "malformed xml": f"{ids[2]}.xml: unreadable VOC xml",
        "label without image": f"{ids[3]}.xml: its image '{ids[3]}.jpg' is missing",
        "image without label": f"{ids[4]}.jpg: image without an annotation xml; not used",
        "path escaping the root": f"{ids[5]}.xml: <filename> '../../../../etc/passwd' leads outside",
    }
    for fault, needle in named.items():
        assert needle in out, f"{fault} not named: {needle!r}\n{out}"
    assert "outside the" in out and "4 images skipped" in out and "1 cannot be (training skips them)" in out

    run = tmp_path / "run"
    code = main(
        ["train", "--data", str(root), "--model", "yolov4-tiny", "--img-size", "64", "--epochs", "1", "--batch", "4",
         "--workers", "0", "--device", "cpu", "--out", str(run),
         "--set", "mosaic=0", "--set", "progress=0", "--set", "amp=0", "--set", "anchors=cfg"]
    )  # fmt: skip
    assert code == 0
    assert (run / "last.pt").is_file() and len((run / "results.csv").read_text().splitlines()) == 2
