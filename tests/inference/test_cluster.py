"""yolo4.inference.cluster: Ray Data batch detection on a local 2-CPU Ray instance gives the
detections of `yolo4 detect`, records a corrupt image, and a rerun recomputes only a deleted shard."""

from __future__ import annotations

import json
import logging
import signal

import cv2
import numpy as np
import pytest
import torch

from yolo4.errors import Yolo4Error

ray = pytest.importorskip("ray")
pytest.importorskip("pyarrow")

from yolo4.inference.cluster import RayConfig, detect_dataset, read_results  # noqa: E402
from yolo4.inference.detect import run_detect  # noqa: E402
from yolo4.ops.nms_config import PostprocessConfig  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield
    ray.shutdown()


@pytest.fixture(autouse=True)
def time_limit():
    """A Ray job that cannot be scheduled waits forever: fail the test after 15 minutes instead."""

    def stop(signum, frame):
        raise TimeoutError("the Ray test ran for 15 minutes")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(900)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def tiny_model(tiny_cfg, tmp_path):
    from yolo4.darknet import load, save_weights

    torch.manual_seed(0)
    model = load(tiny_cfg)
    with torch.no_grad():  # weights large enough for the detections to depend on the image
        for p in model.parameters():
            p.normal_(0.0, 1.5)
    weights = tmp_path / "tiny.weights"
    save_weights(model, weights)
    return tiny_cfg, weights


@pytest.fixture
def image_folder(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(7):
        h, w = (int(v) for v in rng.integers(40, 120, 2))
        cv2.imwrite(str(images / f"img{i}.png"), rng.integers(0, 255, (h, w, 3), np.uint8))
    (images / "bad.jpg").write_bytes(b"not a jpeg")
    return images


def test_ray_matches_single_process_and_records_a_corrupt_image(local_ray, tiny_model, image_folder, tmp_path):
    cfg, weights = tiny_model
    images = image_folder
    settings = {
        "model": cfg,
        "weights": weights,
        "names": ["a", "b"],
        "postprocess": PostprocessConfig(conf=0.2),
        "progress": False,
    }
    run = RayConfig(workers=1, cpus_per_worker=1, shard_size=3, batch=2)  # one actor: the fast test

    first = detect_dataset([images], out=tmp_path / "results", ray_config=run, **settings)
    assert (first.images, first.failed, first.shards) == (8, 1, 3)
    assert sorted(first.shards_written) == [0, 1, 2] and first.shards_skipped == []
    table = read_results(tmp_path / "results").to_pylist()
    bad = [r for r in table if r["path"].endswith("bad.jpg")]
    assert len(bad) == 1 and "bad.jpg" in bad[0]["error"] and bad[0]["boxes"] == []

    run_detect([images], out=tmp_path / "single", batch=3, **settings)
    expected = {r["image"]: r for r in json.loads((tmp_path / "single" / "detections.json").read_text())}
    assert len(expected) == 7 and sum(len(r["detections"]) for r in expected.values()) > 0
    for row in table:
        if row["error"]:
            continue
        want = expected[row["path"]]
        assert (row["width"], row["height"]) == (want["width"], want["height"])
        assert row["class_ids"] == [d["class_id"] for d in want["detections"]]
        assert row["scores"] == pytest.approx([d["score"] for d in want["detections"]], abs=1e-4)
        assert np.allclose(np.array(row["boxes"]).reshape(-1, 4), [d["box"] for d in want["detections"]], atol=0.02)
    summary = json.loads((tmp_path / "results" / "summary.json").read_text())
    assert summary["failed"] == 1 and summary["images"] == 8


def test_actors_run_the_network_with_the_speed_asked_for(tiny_model, tmp_path):
    from dataclasses import asdict

    from yolo4.inference.cluster import ModelFiles, _build
    from yolo4.inference.speed import EAGER, FAST_CPU

    cfg, weights = tiny_model
    files = ModelFiles.from_args(cfg, weights, ["a", "b"])
    options = {"img_size": None, "resize": None, "postprocess": asdict(PostprocessConfig()), "tile": None}
    options["device"] = "cpu"
    assert _build(files, {**options, "speed": asdict(EAGER)}, tmp_path).speed == EAGER
    assert _build(files, {**options, "speed": None}, tmp_path).speed == FAST_CPU  # the device's default


@pytest.mark.slow
def test_ray_rerun_recomputes_only_a_deleted_shard(local_ray, tiny_model, image_folder, tmp_path):
    cfg, weights = tiny_model
    images = image_folder
    settings = {
        "model": cfg,
        "weights": weights,
        "names": ["a", "b"],
        "postprocess": PostprocessConfig(conf=0.2),
        "progress": False,
    }
    run = RayConfig(workers=2, cpus_per_worker=1, shard_size=3, batch=2)
    first = detect_dataset([images], out=tmp_path / "results", ray_config=run, **settings)
    assert sorted(first.shards_written) == [0, 1, 2]
    table = read_results(tmp_path / "results").to_pylist()
    assert sum(len(r["scores"]) for r in table) > 0
    shard0, shard1 = (tmp_path / "results" / f"part-0000{k}.parquet" for k in (0, 1))
    stamp0 = shard0.stat().st_mtime_ns
    before = shard1.read_bytes()
    shard1.unlink()
    again = detect_dataset([images], out=tmp_path / "results", ray_config=run, **settings)
    assert again.shards_written == [1] and again.shards_skipped == [0, 2]
    assert shard0.stat().st_mtime_ns == stamp0
    assert read_results(tmp_path / "results").to_pylist() == table
    assert len(shard1.read_bytes()) == len(before)

    # other settings must not mix into the same folder
    with pytest.raises(Yolo4Error, match="other settings"):
        detect_dataset(
            [images],
            out=tmp_path / "results",
            ray_config=run,
            **{**settings, "postprocess": PostprocessConfig(conf=0.3)},
        )
