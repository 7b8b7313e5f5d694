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
from yolo4.inference.fastpath import SpeedConfig
from yolo4.inference.pipeline import Pipeline, batched
from yolo4.inference.tiles import TileConfig, TiledDetector
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


class _DetectRun:
    """The state of one `run_detect`: output names, JSON records, stage totals, problems."""

    def __init__(
        self,
        detector: Detector | TiledDetector,
        out_dir: Path,
        json_path: Path,
        batch: int,
        progress: bool,
        threaded: bool = True,
    ):
        self.detector, self.out_dir, self.batch, self.progress = detector, out_dir, batch, progress
        self.threaded = threaded
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

    def _pipeline(self) -> Pipeline:
        """prepare -> network -> post-process -> draw, each in its own thread unless `threaded` is off."""

        def prepare(item: tuple[list[np.ndarray], list[str]]):
            return self.detector.prepare(*item)

        def draw(results: list[Detections]) -> tuple[list[Detections], list[np.ndarray]]:
            return results, [r.draw() for r in results]

        stages = [prepare, self.detector.forward, self.detector.finish, draw]
        return Pipeline(stages, threaded=self.threaded)

    def images(self, sources: list[ImageSource]) -> None:
        """Batches of readable images -> annotated copies; unreadable ones are reported."""
        from tqdm import tqdm

        bar = tqdm(total=len(sources), desc="images", unit="img", disable=not self.progress, file=sys.stderr)

        def batches() -> Iterator[tuple[list[np.ndarray], list[str]]]:  # the pipeline's source: decoding
            def readable() -> Iterator[tuple[np.ndarray, ImageSource]]:
                for src in sources:
                    try:
                        yield load_image(src.path), src
                    except DataError as e:
                        self.report(str(e))
                        bar.update(1)

            for chunk in batched(readable(), self.batch):
                yield [c[0] for c in chunk], [str(c[1].path) for c in chunk]

        for results, drawn in self._pipeline().run(batches()):
            for r, image in zip(results, drawn):
                path = Path(r.path or "image")
                ext = path.suffix.lower() if path.suffix.lower() in SAVED_IMAGE_EXTS else ".jpg"
                out = self.out_path(path.stem, ext)
                _write_image(out, image)
                self.summary.written.append(out)
            self._account(results)
            bar.update(len(results))
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
        done, interrupted = 0, False
        bar = tqdm(total=count or None, desc=src.name, unit="frame", disable=not self.progress, file=sys.stderr)

        def batches() -> Iterator[tuple[list[np.ndarray], list[str]]]:  # the pipeline's source: decoding
            first = 0
            for chunk in batched(iter_frames(cap), self.batch):
                yield chunk, [f"{src.name}#frame={first + i}" for i in range(len(chunk))]
                first += len(chunk)

        try:
            for results, drawn in self._pipeline().run(batches()):
                for image in drawn:
                    if writer is None:
                        h, w = image.shape[:2]
                        writer = cv2.VideoWriter(str(out), cv2.VideoWriter.fourcc(*"mp4v"), fps, (w, h))
                        if not writer.isOpened():
                            raise DataError(f"{out}: cannot create the output video")
                    writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
                self._account(results)
                done += len(results)
                bar.update(len(results))
        except KeyboardInterrupt:
            interrupted = True
            tqdm.write(f"{src.name}: stopped after {done} frames", file=sys.stderr)
        finally:
            bar.close()
            cap.release()
            if writer is not None:
                writer.release()
                self.summary.written.append(out)
        if done == 0:
            self.report(f"{src.name}: no frame could be read")
        elif not interrupted and done + 1 < count:  # (containers may count one frame more than they hold)
            self.report(
                f"{src.name}: ended after {done} of the {count} frames its header announces (a truncated or "
                f"damaged file); the {done} frames read were processed"
            )

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
    tile: TileConfig | None = None,
    pipeline: bool = True,
    runtime: str = "auto",
    speed: SpeedConfig | None = None,
) -> DetectSummary:
    """`yolo4 detect`: detect on images, folders, globs, videos and webcams (see
    `resolve_sources`); write annotated images (their own names), annotated videos
    (`<stem>.mp4`, `webcam<N>.mp4`) and a JSON list of `Detections.to_dict()`
    (`detections.json`; a relative `json_path` is taken inside `out`) into the folder `out`.
    `model`/`weights` as `build_detector`; `postprocess` defaults to `DETECT_POSTPROCESS`.
    Inputs that fail are reported on stderr by name and skipped; the caller decides what
    `processed == 0` means. Prints one per-stage timing line at the end.

    `tile` runs each image as overlapping tiles (`yolo4.inference.tiles`); `pipeline` runs
    decoding, pre-processing, the network, post-processing and drawing in their own threads
    (`yolo4.inference.pipeline`; off: one after another, as a baseline). `runtime` runs an exported
    model ("auto": the fastest installed; see `build_detector`). `speed`: how a darknet
    network runs (`yolo4.inference.fastpath.SpeedConfig`; default: the device's).
    """
    if batch < 1:
        raise Yolo4Error(f"--batch must be >= 1, got {batch}")
    base = build_detector(
        model,
        weights,
        names=names,
        img_size=img_size,
        resize=resize,
        postprocess=postprocess,
        device=device,
        runner=runner,
        runtime=runtime,
        speed=speed,
    )
    detector: Detector | TiledDetector = base if tile is None else TiledDetector(base, tile)
    save = Path(out)
    try:
        save.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise Yolo4Error(f"{save}: cannot create the output folder ({e.strerror or e})") from None
    jpath = Path(json_path) if json_path is not None else Path("detections.json")
    run = _DetectRun(detector, save, jpath if jpath.is_absolute() else save / jpath, batch, progress, pipeline)
    found, problems = resolve_sources(sources)
    for msg in problems:
        run.report(msg)
    if found:
        if tile is None and base.speed.compile != "off":
            base.warmup(batch)  # compiled for the run's batch size (smaller batches are padded to it)
        else:
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
    tiles = f", {tile.describe()}" if tile is not None else ""
    how = f" ({base.speed.describe()})" if base.network is not None else ""
    print(
        f"{summary.processed} images/frames at {w}x{h} ({detector.resize}{tiles}), {len(summary.problems)} problems. "
        f"Per image: pre-process {t['preprocess']:.1f} ms, network {t['network']:.1f} ms{how}, "
        f"post-process {t['postprocess']:.1f} ms. Results in {save}"
    )
    return summary
