"""yolo4.inference.pipeline: order, overlap of stages, errors and early stops; run_detect with and
without it gives the same detections."""

from __future__ import annotations

import json
import threading

import cv2
import numpy as np
import pytest

from yolo4.inference.detect import run_detect
from yolo4.inference.pipeline import Pipeline


def _pipeline_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("pipeline-")]


@pytest.mark.parametrize("threaded", [True, False])
def test_results_in_order_and_equal_to_inline(threaded):
    pipe = Pipeline([lambda x: x + 1, lambda x: x * 10, str], threaded=threaded, queue_size=1)
    assert list(pipe.run(range(50))) == [str((i + 1) * 10) for i in range(50)]
    assert not _pipeline_threads()


def test_stages_run_at_the_same_time():
    """The second stage holds item 0 until the first stage has started item 1: only possible
    when the two run concurrently (inline it would time out and record no overlap)."""
    started_second_item = threading.Event()
    overlapped = []

    def first(i):
        if i == 1:
            started_second_item.set()
        return i

    def second(i):
        if i == 0:
            overlapped.append(started_second_item.wait(timeout=10))
        return i

    assert list(Pipeline([first, second]).run(range(3))) == [0, 1, 2]
    assert overlapped == [True]
    overlapped.clear()
    started_second_item.clear()

    def second_inline(i):  # the same check, inline: the first stage cannot have moved on
        if i == 0:
            overlapped.append(started_second_item.wait(timeout=0.05))
        return i

    list(Pipeline([first, second_inline], threaded=False).run(range(3)))
    assert overlapped == [False]


def test_a_failing_stage_raises_in_the_caller_and_stops_every_thread():
    def boom(i):
        if i == 3:
            raise ValueError("bad frame 3")
        return i

    seen = []
    with pytest.raises(ValueError, match="bad frame 3"):
        for out in Pipeline([lambda x: x, boom, lambda x: x]).run(range(100)):
            seen.append(out)
    assert seen == [0, 1, 2]
    assert not _pipeline_threads()


def test_a_failing_source_raises_and_an_early_break_stops_the_threads():
    def source():
        yield 1
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        list(Pipeline([lambda x: x]).run(source()))
    gen = Pipeline([lambda x: x, lambda x: x]).run(iter(range(10**9)))
    assert next(gen) == 0
    gen.close()  # the caller stops reading (break, Ctrl-C)
    assert not _pipeline_threads()


def test_run_detect_video_same_detections_with_and_without_pipeline(tiny_cfg, fake_runner, tmp_path):
    video = tmp_path / "clip.mp4"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (96, 64))
    for i in range(7):
        w.write(np.full((64, 96, 3), 30 * i, np.uint8))
    w.release()
    records = []
    for threaded in (True, False):
        out = tmp_path / f"out-{threaded}"
        summary = run_detect(
            [video], model=tiny_cfg, runner=fake_runner, batch=3, out=out, progress=False, pipeline=threaded
        )
        assert summary.processed == 7
        records.append(json.loads((out / "detections.json").read_text()))
    assert records[0] == records[1]
    assert [r["image"] for r in records[0]] == [f"{video}#frame={i}" for i in range(7)]
