"""A PyTorch DataLoader over a DetectionDataset: augmented (or letterboxed) samples,
batched with a collate that concatenates variable box counts.

Randomness: every sample draws its augmentation from its own generator seeded with
(seed, epoch, index), so a run is reproducible whatever the number of workers. The epoch is
the `epoch` of a sampler that has one (DistributedSampler after `set_epoch`), else the count
of passes over the loader.
"""

from __future__ import annotations

import itertools
import logging
import signal
from collections.abc import Iterator, Sized
from typing import cast

import cv2
import numpy as np
import torch
from torch.utils.data import (
    DataLoader,
    Dataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
)

from yolo4.data.augment import AugmentConfig, eval_sample, train_sample
from yolo4.errors import DataError

log = logging.getLogger("yolo4.data")


class _SeededSampler(Sampler):
    """Wraps a sampler of indices; yields (index, epoch) pairs, leaving out the first `skip`
    indices of each pass."""

    def __init__(self, inner: Sampler, skip: int = 0) -> None:
        self.inner = inner
        self.skip = int(skip)
        self._passes = 0

    def __len__(self) -> int:
        return max(len(cast(Sized, self.inner)) - self.skip, 0)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.inner, "set_epoch"):
            self.inner.set_epoch(epoch)
        self._passes = epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = int(getattr(self.inner, "epoch", self._passes))
        self._passes += 1
        for i in itertools.islice(self.inner, self.skip, None):
            yield int(i), epoch


class TorchDetectionDataset(Dataset):
    """Map-style torch dataset: item (index, epoch) -> (image uint8 Tensor[3, H, W], boxes
    float32 (N, 4), class_ids int64 (N,), info). An image that fails to load is reported
    once (logged and added to `dataset.problems` in that process) and replaced by the next
    one, so an epoch never dies on one bad file."""

    def __init__(
        self, dataset, img_size, augment: AugmentConfig | None, seed: int = 0, letterbox_eval: bool = True
    ) -> None:
        self.dataset = dataset
        self.img_size = img_size
        self.augment = augment
        self.seed = int(seed)
        self.letterbox_eval = letterbox_eval
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item):
        index, epoch = item if isinstance(item, tuple) else (item, 0)
        n = len(self.dataset)
        for attempt in range(min(n, 20)):
            i = (int(index) + attempt) % n
            rng = np.random.default_rng([self.seed, int(epoch), int(index), attempt])
            try:
                if self.augment is None:
                    img, boxes, cls, info = eval_sample(self.dataset, i, self.img_size, self.letterbox_eval)
                else:
                    img, boxes, cls, info = train_sample(self.dataset, i, self.img_size, self.augment, rng)
            except DataError as e:
                if i not in self._bad:
                    self._bad.add(i)
                    if hasattr(self.dataset, "problems"):
                        self.dataset.problems.append(str(e))
                    log.warning("skipping a sample: %s", e)
                continue
            image = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))  # (3, H, W) uint8
            return image, torch.from_numpy(boxes), torch.from_numpy(cls), info
        raise DataError(
            f"{getattr(self.dataset, 'source', 'dataset')}: 20 images in a row failed to load "
            f"(from index {index}); run `yolo4 dataset check`"
        )


def collate(batch: list) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
    """Stack a list of samples.

    Returns:
        images float32 Tensor[B, 3, H, W] in [0, 1] RGB, targets float32 Tensor[M, 6] rows
        (batch_index, class_id, x1, y1, x2, y2) in input pixels, infos list of B dicts.
    """
    images = torch.stack([b[0] for b in batch]).float().div_(255.0)
    rows = []
    for k, (_, boxes, cls, _) in enumerate(batch):
        n = len(cls)
        rows.append(torch.cat([torch.full((n, 1), float(k)), cls.float().reshape(n, 1), boxes.reshape(n, 4)], 1))
    targets = torch.cat(rows) if rows else torch.zeros((0, 6))
    return images, targets.float(), [b[3] for b in batch]


def _worker_init(worker_id: int) -> None:
    cv2.setNumThreads(0)  # the DataLoader already runs one process per core
    # Ctrl-C and a scheduler's SIGTERM reach the whole process group; the training process
    # decides when to stop (at the next step, after a checkpoint). A worker killed by them
    # first would end the epoch with "DataLoader worker exited unexpectedly" instead. Workers
    # exit on their own when the training process is gone.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def build_loader(
    dataset,
    img_size,
    batch_size: int,
    augment: AugmentConfig | None,
    shuffle: bool,
    workers: int,
    sampler: Sampler | None = None,
    seed: int = 0,
    drop_last: bool = False,
    letterbox_eval: bool = True,
    skip: int = 0,
) -> DataLoader:
    """A DataLoader of (images Tensor[B, 3, H, W] float32 in [0, 1] RGB, targets Tensor[M, 6]
    (batch_index, class_id, x1, y1, x2, y2) input pixels, infos list of dicts {path,
    orig_hw, scale, pad, augmented}).

    Args:
        dataset: a DetectionDataset (anything with load, image_paths, image_hw, len).
        img_size: network input, int (square) or (H, W).
        augment: an AugmentConfig for training, or None for letterboxed evaluation samples.
        shuffle: reshuffle every epoch (ignored when `sampler` is given).
        workers: DataLoader worker processes (0: load in the main process).
        sampler: e.g. a torch DistributedSampler over range(len(dataset)); call its
            set_epoch (or the loader's `batch_sampler.sampler.set_epoch`) each epoch.
        seed: seeds the shuffling and every sample's augmentation.
        skip: leave out the first `skip` indices of the sampler's order (a training resumed within
            an epoch: the rest of its batches are the ones the uninterrupted run would get).
    """
    if sampler is None:
        g = torch.Generator()
        g.manual_seed(int(seed))
        sampler = RandomSampler(range(len(dataset)), generator=g) if shuffle else SequentialSampler(range(len(dataset)))
    g2 = torch.Generator()
    g2.manual_seed(int(seed) + 1)
    return DataLoader(
        TorchDetectionDataset(dataset, img_size, augment, seed, letterbox_eval),
        batch_size=batch_size,
        sampler=_SeededSampler(sampler, skip),
        num_workers=workers,
        collate_fn=collate,
        drop_last=drop_last,
        pin_memory=torch.cuda.is_available(),
        worker_init_fn=_worker_init if workers > 0 else None,
        generator=g2,
        persistent_workers=workers > 0,
    )
