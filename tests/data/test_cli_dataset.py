"""`yolo4 dataset check | show | shapes` through yolo4.cli.main."""

from __future__ import annotations

import cv2
import numpy as np
import yaml

from yolo4.cli import main


def test_check_prints_counts_histogram_and_problems(tmp_path, capsys, shapes_small):
    assert (
        main(["dataset", "check", "--data", str(shapes_small), "--split", "val", "--out", str(tmp_path / "c.png")]) == 0
    )
    out = capsys.readouterr().out
    assert "[val]: 20 images" in out and "boxes per class:" in out and "circle" in out
    assert "box size sqrt(w*h)" in out and "no problems found" in out
    assert cv2.imread(str(tmp_path / "c.png")) is not None
    # a broken dataset: exit code 1, and the problem named by file
    root = tmp_path / "bad"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for k in range(3):
        cv2.imwrite(str(root / "images" / f"{k}.png"), np.zeros((20, 30, 3), np.uint8))
        (root / "labels" / f"{k}.txt").write_text("0 0.5 0.5 0.2 0.2\n" if k else "3 0.5 0.5 0.2 0.2\n")
    (root / "classes.txt").write_text("a\nb\n")
    assert main(["dataset", "check", "--data", str(root)]) == 1
    out = capsys.readouterr().out
    assert "1 images skipped" in out and "0.txt:1: class id 3 out of range [0, 2)" in out


def test_check_reports_an_unusable_source(tmp_path, capsys):
    assert main(["dataset", "check", "--data", str(tmp_path / "missing")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_show_draws_a_grid(tmp_path, shapes_small, capsys):
    out = tmp_path / "grid.jpg"
    assert (
        main(["dataset", "show", "--data", str(shapes_small), "--out", str(out), "--count", "4", "--img-size", "128"])
        == 0
    )
    plain = cv2.imread(str(out))
    assert plain is not None and plain.shape[0] > 300
    out2 = tmp_path / "aug.png"
    assert (
        main(
            [
                "dataset",
                "show",
                "--data",
                str(shapes_small),
                "--augment",
                "--split",
                "val",
                "--out",
                str(out2),
                "--count",
                "4",
                "--img-size",
                "128",
            ]
        )
        == 0
    )
    aug = cv2.imread(str(out2))
    assert aug.shape == plain.shape and not np.array_equal(aug, plain)
    assert str(out2) in capsys.readouterr().out


def test_shapes_writes_the_dataset(tmp_path, capsys):
    assert (
        main(
            [
                "dataset",
                "shapes",
                "--out",
                str(tmp_path / "s"),
                "--num-train",
                "6",
                "--num-val",
                "3",
                "--img-size",
                "128",
                "--seed",
                "2",
            ]
        )
        == 0
    )
    y = tmp_path / "s" / "data.yaml"
    assert str(y) in capsys.readouterr().out
    meta = yaml.safe_load(y.read_text())
    assert meta["val"] == "images/val" and len(meta["names"]) >= 6
    assert len(list((tmp_path / "s" / "images" / "train").glob("*.jpg"))) == 6
    assert cv2.imread(str(tmp_path / "s" / "images" / "val" / "000000.jpg")).shape == (128, 128, 3)


def test_show_skips_an_undecodable_image_with_a_warning_naming_it(tmp_path, capsys):
    """`load_image` refuses a corrupt file; `dataset show` names it on stderr and draws the others."""
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for k in range(4):
        cv2.imwrite(str(root / "images" / f"{k}.png"), np.full((40, 60, 3), 60 * k, np.uint8))
        (root / "labels" / f"{k}.txt").write_text("0 0.5 0.5 0.4 0.4\n")
    good = (root / "images" / "2.png").read_bytes()
    (root / "images" / "2.png").write_bytes(good[: len(good) // 2])  # truncated: the header reads, the pixels do not
    (root / "classes.txt").write_text("a\n")
    out = tmp_path / "grid.png"
    for extra in ([], ["--augment"]):
        argv = ["dataset", "show", "--data", str(root), "--split", "all", "--out", str(out), "--count", "4"]
        assert main([*argv, "--img-size", "64", *extra]) == 0
        err = capsys.readouterr().err
        assert "2.png: not a readable image" in err and "skipped" in err, err
        assert cv2.imread(str(out)) is not None
    # nothing readable at all: a clear error, not a traceback
    for k in (0, 1, 3):
        whole = (root / "images" / f"{k}.png").read_bytes()
        (root / "images" / f"{k}.png").write_bytes(whole[: len(whole) // 2])
    assert main(["dataset", "show", "--data", str(root), "--split", "all", "--out", str(out)]) == 2
    assert "none of the 4 images" in capsys.readouterr().err
