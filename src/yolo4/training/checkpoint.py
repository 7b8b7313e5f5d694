"""Training checkpoints: atomic writes, loads with `weights_only=True`, fallback to the
previous good file.

    save_checkpoint(state, run_dir / "last.pt")     # temp file + fsync + rename; keeps last.prev.pt
    state, path = load_latest(run_dir)               # last.pt, or last.prev.pt if last.pt is damaged

A checkpoint holds only tensors and primitives (dicts, lists, tuples, str, int, float, bool,
None), so `torch.load(..., weights_only=True)` reads it without executing anything.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from yolo4.errors import Yolo4Error

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("model", "epoch", "step", "config")


class CheckpointError(Yolo4Error):
    """A checkpoint file that cannot be used (truncated, not a checkpoint, missing keys)."""


def _prev_path(path: Path) -> Path:
    return path.with_name(path.stem + ".prev" + path.suffix)


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike, keep_previous: bool = True) -> Path:
    """Write `state` to `path` atomically: a temp file in the same folder, fsync, rename.

    With keep_previous, the file already at `path` is first renamed to `<stem>.prev<suffix>`,
    so a reader always finds at least one complete checkpoint.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and path.exists():
            os.replace(path, _prev_path(path))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with `weights_only=True` and check it has the training keys.

    Raises:
        CheckpointError naming the file when it is missing, truncated or not a checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, wrong format, unpickling refused
        raise CheckpointError(f"{path}: damaged or not a checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED_KEYS):
        raise CheckpointError(f"{path}: not a yolo4 training checkpoint (needs keys {REQUIRED_KEYS})")
    return state


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


# ------------------------------------------------------------------ RNG states as tensors/primitives
def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA) generator states, as tensors and primitives only."""
    np_state = np.random.get_state()
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
