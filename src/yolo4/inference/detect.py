"""The `yolo4 detect` run: images, folders, globs, videos and webcams through a `Detector`,
written out as annotated images and videos plus a detections.json, with per-stage timings.

    summary = run_detect(["dog.jpg", "clips/"], model="yolov4.cfg", weights="yolov4.weights", out="runs/detect")
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from torch import nn

from yolo4.data.sources import (
    ImageSource,
    VideoSource,
    iter_frames,
    load_image,
    open_video,
    resolve_sources,
)
from yolo4.errors import DataError, Yolo4Error
from yolo4.inference.detector import (
    STAGES,
    Detections,
    Detector,
    Runner,
    build_detector,
)
from yolo4.ops.nms import DETECT_POSTPROCESS, PostprocessConfig


@dataclass
class DetectSummary:
    """What `run_detect` did: images/frames processed, problems (each naming its input),
    files written (all inside the output folder, plus the JSON) and mean per-image stage timings in ms."""

    processed: int = 0
    problems: list[str] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)
    json_path: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)


SAVED_IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp"})  # kept as given; others saved as .jpg


def _write_image(path: Path, rgb: np.ndarray) -> None:
    ok, buf = cv2.imencode(path.suffix.lower(), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise DataError(f"{path}: cannot encode image")
    buf.tofile(str(path))


def _batched(items: Iterator[Any], n: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class _DetectRun:
    """The state of one `run_detect`: output names, JSON records, stage totals, problems."""

    def __init__(self, detector: Detector, out_dir: Path, json_path: Path, batch: int, progress: bool):
        self.detector, self.out_dir, self.batch, self.progress = detector, out_dir, batch, progress
        self.summary = DetectSummary(json_path=json_path)
        self.records: list[dict[str, Any]] = []
        self.totals = dict.fromkeys(STAGES, 0.0)
        self.used = {json_path.name.lower()}

    def report(self, msg: str) -> None:
        from tqdm import tqdm

        self.summary.problems.append(msg)
        tqdm.write(f"warning: {msg}", file=sys.stderr)

    def out_path(self, stem: str, ext: str) -> Path:
        """A file name inside the output folder that no earlier output of this run has taken."""
        candidate, i = f"{stem}{ext}", 1
        while candidate.lower() in self.used:
            candidate, i = f"{stem}_{i}{ext}", i + 1
        self.used.add(candidate.lower())
        return self.out_dir / candidate

    def _account(self, results: list[Detections]) -> None:
        for r in results:
            for k in STAGES:
                self.totals[k] += r.timings.get(k, 0.0)
            self.records.append(r.to_dict())
            r.image = None  # drawn and recorded: do not keep the pixels alive
        self.summary.processed += len(results)

    def images(self, sources: list[ImageSource]) -> None:
        """Batches of readable images -> annotated copies; unreadable ones are reported."""
        from tqdm import tqdm

        bar = tqdm(total=len(sources), desc="images", unit="img", disable=not self.progress, file=sys.stderr)

        def readable() -> Iterator[tuple[np.ndarray, ImageSource]]:
            for src in sources:
                try:
                    yield load_image(src.path), src
                except DataError as e:
                    self.report(str(e))
                    bar.update(1)

        for chunk in _batched(readable(), self.batch):
            results = self.detector.predict_batch([c[0] for c in chunk], [str(c[1].path) for c in chunk])
            for r, (_, src) in zip(results, chunk):
                ext = src.path.suffix.lower() if src.path.suffix.lower() in SAVED_IMAGE_EXTS else ".jpg"
                out = self.out_path(src.path.stem, ext)
                _write_image(out, r.draw())
                self.summary.written.append(out)
            self._account(results)
            bar.update(len(chunk))
        bar.close()

    def video(self, src: VideoSource) -> None:
        """A video file or webcam -> `<stem>.mp4` / `webcam<N>.mp4` with boxes drawn on every frame.
        Ctrl-C ends a webcam (or long video) cleanly, keeping what was recorded."""
        from tqdm import tqdm

        try:
            cap, fps, count = open_video(src)
        except DataError as e:
            self.report(str(e))
            return
        out = self.out_path(src.path.stem if src.path is not None else f"webcam{src.camera}", ".mp4")
        writer: cv2.VideoWriter | None = None
        done = 0
        bar = tqdm(total=count or None, desc=src.name, unit="frame", disable=not self.progress, file=sys.stderr)
        try:
            for chunk in _batched(iter_frames(cap), self.batch):
                names = [f"{src.name}#frame={done + i}" for i in range(len(chunk))]
                results = self.detector.predict_batch(chunk, names)
                for r in results:
                    drawn = cv2.cvtColor(r.draw(), cv2.COLOR_RGB2BGR)
                    if writer is None:
                        h, w = drawn.shape[:2]
                        writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                        if not writer.isOpened():
                            raise DataError(f"{out}: cannot create the output video")
                    writer.write(drawn)
                self._account(results)
                done += len(chunk)
                bar.update(len(chunk))
        except KeyboardInterrupt:
            tqdm.write(f"{src.name}: stopped after {done} frames", file=sys.stderr)
        finally:
            bar.close()
            cap.release()
            if writer is not None:
                writer.release()
                self.summary.written.append(out)
        if done == 0:
            self.report(f"{src.name}: no frame could be read")

    def finish(self) -> DetectSummary:
        """Write the JSON list and fill in the mean per-image stage timings."""
        path = self.summary.json_path
        assert path is not None
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.records, indent=1))
        n = max(self.summary.processed, 1)
        self.summary.timings = {k: v / n for k, v in self.totals.items()}
        return self.summary


def run_detect(
    sources: Sequence[str | os.PathLike],
    *,
    model: str | os.PathLike | nn.Module | None = None,
    weights: str | os.PathLike | None = None,
    names: str | os.PathLike | Sequence[str] | None = None,
    img_size: int | None = None,
    resize: str | None = None,
    postprocess: PostprocessConfig = DETECT_POSTPROCESS,
    device: str = "auto",
    batch: int = 1,
    json_path: str | os.PathLike | None = None,
    out: str | os.PathLike = "runs/detect",
    progress: bool = True,
    runner: Runner | None = None,
) -> DetectSummary:
    """`yolo4 detect`: detect on images, folders, globs, videos and webcams (see
    `resolve_sources`); write annotated images (their own names), annotated videos
    (`<stem>.mp4`, `webcam<N>.mp4`) and a JSON list of `Detections.to_dict()`
    (`detections.json`; a relative `json_path` is taken inside `out`) into the folder `out`.
    `model`/`weights` as `build_detector`; `postprocess` defaults to `DETECT_POSTPROCESS`.
    Inputs that fail are reported on stderr by name and skipped; the caller decides what
    `processed == 0` means. Prints one per-stage timing line at the end.
    """
    if batch < 1:
        raise Yolo4Error(f"--batch must be >= 1, got {batch}")
    detector = build_detector(
        model,
        weights,
        names=names,
        img_size=img_size,
        resize=resize,
        postprocess=postprocess,
        device=device,
        runner=runner,
    )
    save = Path(out)
    try:
        save.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise Yolo4Error(f"{save}: cannot create the output folder ({e.strerror or e})") from None
    jpath = Path(json_path) if json_path is not None else Path("detections.json")
    run = _DetectRun(detector, save, jpath if jpath.is_absolute() else save / jpath, batch, progress)
    found, problems = resolve_sources(sources)
    for msg in problems:
        run.report(msg)
    if found:
        detector.warmup()
    try:
        run.images([s for s in found if isinstance(s, ImageSource)])
        for src in found:
            if isinstance(src, VideoSource):
                run.video(src)
    finally:
        summary = run.finish()
    t = summary.timings
    h, w = detector.input_hw
    print(
        f"{summary.processed} images/frames at {w}x{h} ({detector.resize}), {len(summary.problems)} problems. "
        f"Per image: pre-process {t['preprocess']:.1f} ms, network {t['network']:.1f} ms, "
        f"post-process {t['postprocess']:.1f} ms. Results in {save}"
    )
    return summary
