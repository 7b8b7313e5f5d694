"""Training checkpoints and run folders: atomic writes, loads with `weights_only=True`,
fallback to the previous good file, a lock against two trainings in one folder.

    save_checkpoint(state, run_dir / "last.pt")     # temp file + fsync + rename; keeps last.prev.pt
    state, path = load_latest(run_dir)               # last.pt, or last.prev.pt if last.pt is damaged
    load_model_state(net, state["model"], path)      # names the first tensors that do not fit
    net = trained_network(run_dir / "best.pt")      # the network a checkpoint holds, EMA weights
    with RunLock(run_dir): ...                       # a second training into run_dir is refused

A checkpoint holds only tensors and primitives (dicts, lists, tuples, str, int, float, bool,
None), so `torch.load(..., weights_only=True)` reads it without executing anything. Each one
records its layout version (`format`); a checkpoint from a newer yolo4 is refused by name
rather than misread. A write that fails (a full disk, a quota) leaves the previous file as it
was and raises CheckpointError saying so.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch import nn

from yolo4.errors import Yolo4Error

if TYPE_CHECKING:
    from yolo4.darknet import Darknet

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("model", "epoch", "step", "config")
CHECKPOINT_FORMAT = 1  # the layout written here; raise it when older readers could not follow a change
DISK_FULL = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EFBIG: "file too large",
}


class CheckpointError(Yolo4Error):
    """A checkpoint file that cannot be used (truncated, not a checkpoint, missing keys, from a
    newer yolo4 or another network) or written (a full disk), or a run folder in use."""


def _prev_path(path: Path) -> Path:
    return path.with_name(path.stem + ".prev" + path.suffix)


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike, keep_previous: bool = True) -> Path:
    """Write `state` to `path` atomically: a temp file in the same folder, fsync, rename.

    With keep_previous, the file already at `path` is first renamed to `<stem>.prev<suffix>`,
    so a reader always finds at least one complete checkpoint.
    """
    from yolo4._version import __version__

    path = Path(path)
    state = {**state, "format": CHECKPOINT_FORMAT, "yolo4_version": str(__version__)}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and path.exists():
            os.replace(path, _prev_path(path))
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch's zip writer turns a failed write into a RuntimeError
        os_error = _os_error(e)
        if os_error is None:
            raise
        why = DISK_FULL.get(os_error.errno or 0, os_error.strerror or str(os_error))
        kept = f"the previous {path.name} is kept as it was" if path.exists() else f"no {path.name} was written yet"
        raise CheckpointError(f"{path}: cannot write the checkpoint ({why}); {kept}") from e
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _os_error(e: BaseException | None) -> OSError | None:
    """The OSError behind `e` (itself, or one it was raised from or while handling)."""
    seen = 0
    while e is not None and seen < 10:
        if isinstance(e, OSError):
            return e
        e, seen = e.__cause__ or e.__context__, seen + 1
    return None


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with `weights_only=True` and check it has the training keys.

    Raises:
        CheckpointError naming the file when it is missing, truncated or not a checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, wrong format, unpickling refused
        raise CheckpointError(f"{path}: damaged or not a checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED_KEYS):
        raise CheckpointError(f"{path}: not a yolo4 training checkpoint (needs keys {REQUIRED_KEYS})")
    fmt = state.get("format", 0)
    if not isinstance(fmt, int) or fmt > CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: written by a newer yolo4 ({state.get('yolo4_version', '?')}, checkpoint format {fmt}; this one "
            f"reads formats up to {CHECKPOINT_FORMAT}): upgrade yolo4 to use it"
        )
    if not isinstance(state["model"], Mapping):
        raise CheckpointError(f"{path}: its 'model' entry is not a state dict")
    return state


def load_model_state(model: nn.Module, state_dict: Mapping[str, Any], path: str | os.PathLike) -> None:
    """`model.load_state_dict(state_dict)` after checking that every tensor fits.

    Raises:
        CheckpointError naming `path` and the first tensors that are missing, extra, or of
        another shape: the checkpoint is from another network (or another number of classes).
    """
    own = model.state_dict()
    problems = [f"{k} missing" for k in own if k not in state_dict]
    problems += [f"{k} not in this network" for k in state_dict if k not in own]
    for k, v in state_dict.items():
        if k in own and not isinstance(v, torch.Tensor):
            problems.append(f"{k} is not a tensor")
        elif k in own and tuple(v.shape) != tuple(own[k].shape):
            problems.append(f"{k} is {tuple(v.shape)}, the network's {tuple(own[k].shape)}")
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise CheckpointError(f"{path}: the weights are for another network: " + "; ".join(problems[:3]) + more)
    model.load_state_dict(state_dict)


def trained_network(
    path: str | os.PathLike, checkpoint: Mapping[str, Any] | None = None, source: str | None = None
) -> Darknet:
    """The network a training checkpoint holds, as a `Darknet`: its cfg and its EMA weights when
    it has them (what validation scored and best.pt was chosen by), else its weights.

    Args:
        path: the checkpoint file (read here unless `checkpoint` is its already loaded content).
        source: the name cfg errors point at (default `path`).
    Raises:
        CheckpointError naming `path` when it holds no network description or its weights do not fit.
    """
    from yolo4.darknet import Darknet, parse_cfg

    ckpt = checkpoint if checkpoint is not None else load_checkpoint(path)
    if "cfg_text" not in ckpt:
        raise CheckpointError(f"{path}: not a yolo4 training checkpoint (no network description)")
    net = Darknet(parse_cfg(ckpt["cfg_text"], source=source or str(path)))
    load_model_state(net, network_state(ckpt), path)
    return net


def network_state(checkpoint: Mapping[str, Any]) -> Mapping[str, Any]:
    """The state dict a checkpoint's network is used with: its EMA weights when it has them (what
    validation scored and best.pt was chosen by), else its weights."""
    return checkpoint["ema"]["module"] if checkpoint.get("ema") else checkpoint["model"]


def load_latest(
    run_dir: str | os.PathLike, name: str = "last.pt", map_location: str | torch.device = "cpu"
) -> tuple[dict[str, Any], Path]:
    """The newest usable checkpoint of a run: `name`, else its `.prev` copy.

    Returns:
        (state, path it came from). A damaged file is reported with a warning and skipped.
    Raises:
        CheckpointError when neither file is usable.
    """
    first = Path(run_dir) / name
    problems = []
    for p in (first, _prev_path(first)):
        try:
            state = load_checkpoint(p, map_location)
        except CheckpointError as e:
            problems.append(str(e))
            if p.exists():
                log.warning("%s; trying the previous checkpoint", e)
            continue
        return state, p
    raise CheckpointError(f"{run_dir}: no usable checkpoint to resume from: " + "; ".join(problems))


# ------------------------------------------------------------------ one training per run folder
class RunLock:
    """An exclusive lock on a run folder while a training writes there (`<folder>/.lock`).

    The operating system holds the lock for the process (flock), so a killed training leaves
    no stale lock behind; the file keeps who held it last (pid, host, start time) for the
    message a second training gets.
    """

    NAME = ".lock"

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / self.NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock. Raises CheckpointError when another process holds it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _lock_fd(fd)
        except OSError:
            holder = _read_holder(fd)
            os.close(fd)
            raise CheckpointError(
                f"{self.folder} is in use by another training ({holder}); give another --out, or stop that "
                "training first (two runs in one folder would overwrite each other's checkpoints)"
            ) from None
        info = json.dumps(
            {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        )
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, info.encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            _unlock_fd(self._fd)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _lock_fd(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]  # Windows-only stubs
        return
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _unlock_fd(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined]  # Windows-only stubs
        return
    fcntl.flock(fd, fcntl.LOCK_UN)


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 4096).decode())
        return f"pid {info['pid']} on {info['host']}, since {info['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


# ------------------------------------------------------------------ RNG states as tensors/primitives
def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA) generator states, as tensors and primitives only."""
    np_state = cast("tuple[Any, ...]", np.random.get_state())  # the legacy (default) form is a tuple
    state = {
        "python": _to_lists(random.getstate()),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` saved."""
    random.setstate(_to_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_lists(x):
    return [_to_lists(v) for v in x] if isinstance(x, (tuple, list)) else x


def _to_tuples(x):
    return tuple(_to_tuples(v) for v in x) if isinstance(x, list) else x
