"""Batch detection over many machines with Ray Data: millions of images, resumable, results
as Parquet.

    summary = detect_dataset(["archive/"], model="best.cfg", weights="best.weights", out="results/")
    # results/part-00000.parquet ...  columns: path, width, height, boxes, scores, class_ids, error
    # results/summary.json            counts, failures, images/s, the settings

How it runs: the image paths (sorted as `yolo4 detect` lists them) are cut into shards of
`shard_size`; the shards not already in `out` become a Ray dataset of paths, read by a small
pool of light tasks (file I/O, `num_cpus=0`, so reading never waits for a detector slot, and
at most max(2, workers) at a time, since unbounded zero-CPU tasks exhaust memory), and detected by a
pool of actors, each holding one `Detector` (one actor per GPU, or one per `cpus_per_worker`
cores with that many PyTorch threads). The model files travel to the actors through Ray's
object store, so the workers need no copy of them; the images must be readable at the same
path from every node (a shared filesystem). The driver gathers each shard's rows and writes
`part-NNNNN.parquet` atomically (a temporary file, then a rename) as soon as the shard is
complete; a rerun skips every shard whose file holds the expected paths and was made with the
same settings, so a killed job resumes where it stopped. An image that cannot be read or
decoded gets a row with its `error` and no boxes; it does not stop the job.

Without `address`, a local Ray instance is started (and stopped at the end); `address="auto"`
joins the cluster this machine belongs to (`ray start --head` on one node, `ray start
--address HEAD:6379` on the others).

Boxes are xyxy float32 in each image's pixels, as `Detections`; class names are in the
Parquet metadata (`yolo4.names`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from yolo4.errors import Yolo4Error
from yolo4.inference.speed import SpeedConfig  # (torch-free)
from yolo4.ops.nms_config import DETECT_POSTPROCESS, PostprocessConfig

if TYPE_CHECKING:  # the read tasks import this module: no torch at its top
    from yolo4.inference.tiles import TileConfig

SUMMARY_FILE = "summary.json"
_SETTINGS_KEY = b"yolo4.settings"


def require_ray():
    """The `ray` module (with Ray Data and pyarrow), or a Yolo4Error saying how to install it."""
    try:
        import pyarrow  # noqa: F401
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise Yolo4Error(f"distributed detection needs Ray Data: pip install 'yolo4[ray]' ({e})") from None
    return ray


@dataclass(frozen=True)
class RayConfig:
    """Where and how wide `detect_dataset` runs.

    address: None starts a local Ray instance for this call; "auto" joins the running cluster;
        "ray://HOST:10001" connects a Ray client.
    workers: detector actors (default: one per GPU, else cluster CPUs // cpus_per_worker).
    cpus_per_worker: CPU cores (and PyTorch threads) per actor (default 1 with a GPU, else 2).
    gpus_per_worker: GPUs per actor (default 1 where the cluster has GPUs and device is not "cpu").
    num_cpus: CPUs of a local instance (default: all of this machine's).
    shard_size: images per Parquet file (the unit of resuming).
    batch: images per forward pass in an actor.
    """

    address: str | None = None
    workers: int | None = None
    cpus_per_worker: int | None = None
    gpus_per_worker: float | None = None
    num_cpus: int | None = None
    shard_size: int = 1000
    batch: int = 16

    def __post_init__(self) -> None:
        if self.shard_size < 1 or self.batch < 1:
            raise Yolo4Error(f"ray: shard_size ({self.shard_size}) and batch ({self.batch}) must be >= 1")
        if self.workers is not None and self.workers < 1:
            raise Yolo4Error(f"ray: workers must be >= 1, got {self.workers}")


@dataclass
class DatasetSummary:
    """What `detect_dataset` did (also written to `out/summary.json`)."""

    out: str
    images: int = 0
    detected: int = 0
    failed: int = 0
    detections: int = 0
    shards: int = 0
    shards_written: list[int] = field(default_factory=list)
    shards_skipped: list[int] = field(default_factory=list)
    workers: int = 0
    seconds: float = 0.0
    images_per_s: float = 0.0
    failures: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)


# ================================================================== the model, shipped as bytes
@dataclass(frozen=True)
class ModelFiles:
    """The files a detector is built from, as bytes, so that actors on any node can rebuild it.
    `model` / `weights` / `names` are either a file (name, bytes) or a plain value (a zoo name,
    a list of names, None)."""

    model: Any
    weights: Any
    names: Any

    @staticmethod
    def pack(value: Any) -> Any:
        if isinstance(value, (str, os.PathLike)) and Path(value).is_file():
            return ("file", Path(value).name, Path(value).read_bytes())
        return value

    @classmethod
    def from_args(cls, model: Any, weights: Any, names: Any) -> ModelFiles:
        return cls(cls.pack(model), cls.pack(weights), cls.pack(names))

    def unpack(self, folder: Path) -> tuple[Any, Any, Any]:
        """Write the files into `folder` (each in its own subfolder); returns model, weights, names."""
        out = []
        for k, value in enumerate((self.model, self.weights, self.names)):
            if isinstance(value, tuple) and len(value) == 3 and value[0] == "file":
                path = folder / str(k) / value[1]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(value[2])
                value = str(path)
            out.append(value)
        return out[0], out[1], out[2]

    def fingerprint(self) -> dict[str, Any]:
        """Names and SHA-256 of the files, for the settings stamp."""

        def one(value: Any) -> Any:
            if isinstance(value, tuple) and len(value) == 3 and value[0] == "file":
                return {"file": value[1], "sha256": hashlib.sha256(value[2]).hexdigest()}
            return value if value is None or isinstance(value, (str, list, int)) else str(value)

        return {"model": one(self.model), "weights": one(self.weights), "names": one(self.names)}


def _build(files: ModelFiles, options: dict[str, Any], folder: Path):
    from yolo4.inference.detector import build_detector
    from yolo4.inference.tiles import TileConfig, TiledDetector

    model, weights, names = files.unpack(folder)
    opts = dict(options)
    tile = opts.pop("tile", None)
    post = PostprocessConfig(**opts.pop("postprocess"))
    speed = opts.pop("speed", None)
    speed = SpeedConfig(**speed) if speed is not None else None
    detector = build_detector(model, weights, names=names, postprocess=post, speed=speed, **opts)
    return TiledDetector(detector, TileConfig(**tile)) if tile else detector


# ================================================================== the Ray stages
def _read_files(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Ray task: the bytes of each path (b"" and an error message when it cannot be read)."""
    data, errors = [], []
    for p in batch["path"]:
        try:
            with open(p, "rb") as f:
                data.append(f.read())
            errors.append("")
        except OSError as e:
            data.append(b"")
            errors.append(f"{p}: cannot read ({e.strerror or e})")
    batch["bytes"] = np.array(data, dtype=object)
    batch["error"] = np.array(errors, dtype=object)
    return batch


def output_schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("path", pa.string()),
            ("width", pa.int32()),
            ("height", pa.int32()),
            ("boxes", pa.list_(pa.list_(pa.float32(), 4))),
            ("scores", pa.list_(pa.float32())),
            ("class_ids", pa.list_(pa.int32())),
            ("error", pa.string()),
        ]
    )


class _DetectWorker:
    """Ray actor: one detector, built once from the shipped files; a batch of read files in,
    a pyarrow table of results (plus shard and index) out."""

    def __init__(self, files: ModelFiles, options: dict[str, Any], threads: int, batch: int):
        import torch

        torch.set_num_threads(max(1, threads))
        self._tmp = tempfile.TemporaryDirectory(prefix="yolo4-worker-")
        self.detector = _build(files, options, Path(self._tmp.name))
        self.batch = batch

    def __call__(self, batch: dict[str, np.ndarray]):
        import cv2
        import pyarrow as pa

        n = len(batch["path"])
        rows: list[dict[str, Any]] = [{} for _ in range(n)]
        ok: list[int] = []
        images: list[np.ndarray] = []
        for i in range(n):
            err = str(batch["error"][i])
            if not err:
                raw = np.frombuffer(batch["bytes"][i], np.uint8)
                img = cv2.imdecode(raw, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION) if raw.size else None
                if img is None:
                    err = (
                        f"{batch['path'][i]}: not a readable image (corrupt, empty or not an image format OpenCV knows)"
                    )
                else:
                    images.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
                    ok.append(i)
            rows[i] = {"width": 0, "height": 0, "boxes": [], "scores": [], "class_ids": [], "error": err or None}
        for start in range(0, len(ok), self.batch):
            idx = ok[start : start + self.batch]
            results = self.detector.predict_batch(
                images[start : start + self.batch], [str(batch["path"][i]) for i in idx]
            )
            for i, r in zip(idx, results):
                rows[i].update(
                    width=int(r.image_hw[1]),
                    height=int(r.image_hw[0]),
                    boxes=r.boxes.astype(np.float32).tolist(),
                    scores=r.scores.astype(np.float32).tolist(),
                    class_ids=r.class_ids.astype(np.int32).tolist(),
                )
        table = pa.Table.from_pylist(
            [{"path": str(batch["path"][i]), **rows[i]} for i in range(n)], schema=output_schema()
        )
        table = table.append_column("shard", pa.array(batch["shard"].astype(np.int64)))
        return table.append_column("index", pa.array(batch["index"].astype(np.int64)))


# ================================================================== shards on disk
def shard_path(out: Path, k: int) -> Path:
    return out / f"part-{k:05d}.parquet"


def _shard_is_done(path: Path, paths: list[str], settings: str) -> bool:
    """True when `path` is a readable shard of exactly `paths`; a shard made with other settings
    raises Yolo4Error (results of two models must not mix in one folder)."""
    import pyarrow.parquet as pq

    if not path.is_file():
        return False
    try:
        meta = pq.read_schema(path).metadata or {}
        stored = pq.read_table(path, columns=["path"]).column("path").to_pylist()
    except Exception:  # noqa: BLE001 - a truncated or foreign file is simply recomputed
        return False
    if meta.get(_SETTINGS_KEY, b"").decode() != settings:
        raise Yolo4Error(
            f"{path}: made with other settings (model, weights or thresholds) than this run; "
            "use another --out folder, or delete the old results"
        )
    return stored == paths


def _write_shard(path: Path, rows: list[dict[str, Any]], settings: str, names: Sequence[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = sorted(rows, key=lambda r: r["index"])
    cols = {name: [r[name] for r in rows] for name in output_schema().names}
    meta = {_SETTINGS_KEY: settings.encode(), b"yolo4.names": json.dumps(list(names)).encode()}
    table = pa.Table.from_pydict(cols, schema=output_schema().with_metadata(meta))
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def read_results(out: str | os.PathLike):
    """All shards of a `detect_dataset` folder as one pyarrow Table (rows in path order)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(Path(out).glob("part-*.parquet"))
    if not files:
        raise Yolo4Error(f"{out}: no part-*.parquet results")
    return pa.concat_tables([pq.read_table(f) for f in files])


# ================================================================== the job
def _local_ray_options(cfg: RayConfig) -> dict[str, Any]:
    return {
        "num_cpus": cfg.num_cpus or os.cpu_count() or 1,
        "include_dashboard": False,
        "logging_level": logging.WARNING,
    }


def detect_dataset(
    sources: Sequence[str | os.PathLike],
    *,
    model: Any = None,
    weights: str | os.PathLike | None = None,
    names: str | os.PathLike | Sequence[str] | None = None,
    img_size: int | None = None,
    resize: str | None = None,
    postprocess: PostprocessConfig = DETECT_POSTPROCESS,
    device: str = "auto",
    tile: TileConfig | None = None,
    out: str | os.PathLike = "results",
    ray_config: RayConfig = RayConfig(),
    progress: bool = True,
    speed: SpeedConfig | None = None,
) -> DatasetSummary:
    """Detect on every image of `sources` (files, folders, globs, as `yolo4 detect`) with a
    pool of Ray actors and write Parquet shards plus `summary.json` into `out` (see the module
    docstring). `model`/`weights`/`names`/`img_size`/`resize`/`postprocess` as `build_detector`;
    `tile` runs every image as tiles (`yolo4.inference.tiles`); `device` "auto" uses a GPU per
    actor where the cluster has GPUs; `speed` is how each actor runs the network (default: its
    device's, `SpeedConfig.for_device`).

    Returns:
        DatasetSummary. Raises Yolo4Error when nothing can be detected (no images, bad model).
    """
    from yolo4.data.sources import ImageSource, resolve_sources

    ray = require_ray()
    started = time.perf_counter()
    out_dir = Path(out)
    found, problems = resolve_sources(sources)
    paths = list(dict.fromkeys(str(Path(s.path).resolve()) for s in found if isinstance(s, ImageSource)))
    problems += [
        f"{s.name}: videos are not run by --ray (use yolo4 detect or yolo4 track)"
        for s in found
        if not isinstance(s, ImageSource)
    ]
    if not paths:
        raise Yolo4Error("no images to detect on" + (": " + "; ".join(problems) if problems else ""))
    files = ModelFiles.from_args(model, weights, names)
    options: dict[str, Any] = {
        "img_size": img_size,
        "resize": resize,
        "postprocess": asdict(postprocess),
        "tile": asdict(tile) if tile is not None else None,
        "speed": asdict(speed) if speed is not None else None,
    }
    with tempfile.TemporaryDirectory(prefix="yolo4-driver-") as tmp:  # fail here, not in every actor
        probe = _build(files, {**options, "device": "cpu", "speed": None}, Path(tmp))
    class_names = list(probe.names)
    settings = json.dumps({**files.fingerprint(), **options}, sort_keys=True)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise Yolo4Error(f"{out_dir}: cannot create the output folder ({e.strerror or e})") from None

    size = ray_config.shard_size
    shards = [paths[i : i + size] for i in range(0, len(paths), size)]
    summary = DatasetSummary(out=str(out_dir), images=len(paths), shards=len(shards), problems=problems)
    summary.settings = json.loads(settings)
    todo = [k for k, shard in enumerate(shards) if not _shard_is_done(shard_path(out_dir, k), shard, settings)]
    summary.shards_skipped = [k for k in range(len(shards)) if k not in set(todo)]
    for msg in problems:
        print(f"warning: {msg}", file=sys.stderr)

    if todo:
        own_ray = not ray.is_initialized()
        if own_ray:
            kw = _local_ray_options(ray_config) if ray_config.address is None else {"logging_level": logging.WARNING}
            ray.init(address=ray_config.address, **kw)
        try:
            job = _Job(shards, todo, files, options, device, ray_config, out_dir, settings, class_names)
            _run_shards(ray, job, summary, progress)
        finally:
            if own_ray:
                ray.shutdown()
    _count_results(out_dir, len(shards), summary)
    summary.seconds = time.perf_counter() - started
    summary.images_per_s = sum(len(shards[k]) for k in todo) / summary.seconds if todo else 0.0
    (out_dir / SUMMARY_FILE).write_text(json.dumps(asdict(summary), indent=1))
    print(
        f"{summary.images} images in {summary.shards} shards ({len(summary.shards_written)} written, "
        f"{len(summary.shards_skipped)} already done), {summary.failed} failed, {summary.detections} detections; "
        f"{summary.workers} workers, {summary.seconds:.1f} s ({summary.images_per_s:.1f} images/s). Results in {out_dir}"
    )
    return summary


@dataclass(frozen=True)
class _Job:
    """What the Ray part of `detect_dataset` needs: every shard's paths, the shards to compute,
    the model files and detector options, where and how to run, and the stamp for the files."""

    shards: list[list[str]]
    todo: list[int]
    files: ModelFiles
    options: dict[str, Any]
    device: str
    config: RayConfig
    out_dir: Path
    settings: str
    names: list[str]


def _run_shards(ray, job: _Job, summary: DatasetSummary, progress: bool) -> None:
    """Run the shards of `job.todo` on Ray and write each as soon as it is complete."""
    import ray.data
    from tqdm import tqdm

    cfg, device, shards = job.config, job.device, job.shards

    resources = ray.cluster_resources()
    gpus = cfg.gpus_per_worker
    if gpus is None:
        gpus = 1.0 if resources.get("GPU", 0) >= 1 and device != "cpu" else 0.0
    if gpus == 0 and str(device).startswith("cuda"):
        raise Yolo4Error(f"device {device} asked for, but the Ray cluster has no GPU")
    cpus = cfg.cpus_per_worker or (1 if gpus else 2)
    cpus = min(cpus, max(1, int(resources.get("CPU", 1))))
    if cfg.workers is not None:
        workers = cfg.workers
    elif gpus:
        workers = max(1, int(resources.get("GPU", 1) // gpus))
    else:
        workers = max(1, int(resources.get("CPU", 1) // cpus))
    summary.workers = workers
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)

    rows = [{"path": p, "shard": k, "index": i} for k in job.todo for i, p in enumerate(shards[k])]
    worker_options = {**job.options, "device": "cuda" if gpus else "cpu"}
    ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows) // cfg.batch, 4 * workers * 8)))
    # reading is file I/O: no CPU slot (all of them may go to actors), but a bounded pool of tasks
    readers = ray.data.TaskPoolStrategy(size=max(2, workers))
    ds = ds.map_batches(_read_files, batch_size=cfg.batch, num_cpus=0, compute=readers)
    ds = ds.map_batches(
        _DetectWorker,
        batch_size=cfg.batch,
        compute=ray.data.ActorPoolStrategy(size=workers),
        fn_constructor_kwargs={"files": job.files, "options": worker_options, "threads": cpus, "batch": cfg.batch},
        num_cpus=cpus,
        num_gpus=gpus,
        batch_format="numpy",
    )
    pending: dict[int, list[dict[str, Any]]] = {k: [] for k in job.todo}
    bar = tqdm(total=len(rows), desc="ray detect", unit="img", disable=not progress, file=sys.stderr)
    for table in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        for row in table.to_pylist():
            k = int(row["shard"])
            pending[k].append(row)
            if len(pending[k]) == len(shards[k]):
                _write_shard(shard_path(job.out_dir, k), pending.pop(k), job.settings, job.names)
                summary.shards_written.append(k)
        bar.update(table.num_rows)
    bar.close()
    if pending:
        raise Yolo4Error(f"Ray returned incomplete results for shards {sorted(pending)}")


def _count_results(out_dir: Path, num_shards: int, summary: DatasetSummary) -> None:
    import pyarrow.parquet as pq

    for k in range(num_shards):
        table = pq.read_table(shard_path(out_dir, k), columns=["error", "scores"])
        errors = [e for e in table.column("error").to_pylist() if e]
        summary.failed += len(errors)
        summary.failures += errors[: max(0, 100 - len(summary.failures))]
        summary.detections += sum(len(s) for s in table.column("scores").to_pylist())
    summary.detected = summary.images - summary.failed
