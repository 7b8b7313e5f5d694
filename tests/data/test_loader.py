"""The DataLoader: batch contract, reproducibility across worker counts, DistributedSampler,
and an image that breaks mid-epoch."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data.distributed import DistributedSampler

from yolo4.data.augment import AugmentConfig
from yolo4.data.dataset import load_dataset
from yolo4.data.loader import build_loader, collate
from yolo4.data.transforms import unletterbox_boxes


def _batches(loader, n=None):
    out = []
    for k, b in enumerate(loader):
        if n is not None and k >= n:
            break
        out.append(b)
    return out


def test_batch_contract_train(shapes_small):
    ds = load_dataset(shapes_small, "train")
    loader = build_loader(ds, 128, 4, AugmentConfig(mixup=0.5), shuffle=True, workers=0)
    images, targets, infos = next(iter(loader))
    assert images.shape == (4, 3, 128, 128) and images.dtype == torch.float32
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    assert targets.dtype == torch.float32 and targets.shape[1] == 6 and len(targets) > 0
    assert set(targets[:, 0].long().tolist()) <= {0, 1, 2, 3}
    assert ((targets[:, 1] >= 0) & (targets[:, 1] < len(ds.names))).all()
    assert (targets[:, 4] > targets[:, 2]).all() and (targets[:, 5] > targets[:, 3]).all()
    assert (targets[:, 2:] >= 0).all() and (targets[:, 2:] <= 128).all()
    assert len(infos) == 4 and all(Path(i["path"]).is_file() for i in infos)


def test_eval_batches_map_back_to_the_labels(shapes_small):
    ds = load_dataset(shapes_small, "val")
    loader = build_loader(ds, 160, 3, None, shuffle=False, workers=0)
    images, targets, infos = next(iter(loader))
    assert images.shape == (3, 3, 160, 160)
    for k, info in enumerate(infos):
        assert info["path"] == str(ds.image_paths[k]) and not info["augmented"]
        back = unletterbox_boxes(targets[targets[:, 0] == k, 2:], info["scale"], info["pad"], info["orig_hw"])
        np.testing.assert_allclose(back.numpy(), ds.labels(k)[0], atol=1e-3)


def test_reproducible_and_independent_of_worker_count(shapes_small):
    ds = load_dataset(shapes_small, "train")
    cfg = AugmentConfig(mixup=0.3)
    a = _batches(build_loader(ds, 96, 4, cfg, shuffle=True, workers=0, seed=3), 3)
    b = _batches(build_loader(ds, 96, 4, cfg, shuffle=True, workers=2, seed=3), 3)
    c = _batches(build_loader(ds, 96, 4, cfg, shuffle=True, workers=0, seed=4), 1)
    for (ia, ta, fa), (ib, tb, fb) in zip(a, b):
        assert torch.equal(ia, ib) and torch.equal(ta, tb)
        assert [i["path"] for i in fa] == [i["path"] for i in fb]
    assert not torch.equal(a[0][0], c[0][0])


def test_epochs_differ(shapes_small):
    ds = load_dataset(shapes_small, "train")
    loader = build_loader(ds, 96, 4, AugmentConfig(), shuffle=False, workers=0)
    e0 = next(iter(loader))
    e1 = next(iter(loader))
    assert [i["path"] for i in e0[2]] == [i["path"] for i in e1[2]]  # same images (no shuffle) ...
    assert not torch.equal(e0[0], e1[0])  # ... augmented differently


def test_distributed_sampler_splits_the_data(shapes_small):
    ds = load_dataset(shapes_small, "val")
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(range(len(ds)), num_replicas=2, rank=rank, shuffle=True, seed=0)
        sampler.set_epoch(1)
        loader = build_loader(ds, 64, 5, None, shuffle=False, workers=0, sampler=sampler)
        paths = [i["path"] for _, _, infos in loader for i in infos]
        assert len(paths) == len(ds) // 2
        seen.append(set(paths))
    assert seen[0].isdisjoint(seen[1]) and len(seen[0] | seen[1]) == len(ds)
    # set_epoch on the user's sampler changes the augmentation epoch as well as the order
    sampler = DistributedSampler(range(len(ds)), num_replicas=2, rank=0, shuffle=False)
    loader = build_loader(ds, 64, 2, AugmentConfig(), shuffle=False, workers=0, sampler=sampler)
    first = next(iter(loader))[0]
    sampler.set_epoch(5)
    assert not torch.equal(first, next(iter(loader))[0])


def test_bad_image_mid_epoch_is_skipped_and_reported(tmp_path, shapes_small, caplog):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(shapes_small.parent, root, ignore=shutil.ignore_patterns(".yolo4-cache"))
    ds = load_dataset(root / "data.yaml", "val")
    assert Path(ds.image_paths[1]).is_relative_to(root)  # never break the shared fixture
    Path(ds.image_paths[1]).write_bytes(b"broken after indexing")
    with caplog.at_level(logging.WARNING, logger="yolo4.data"):
        batches = _batches(build_loader(ds, 64, 4, None, shuffle=False, workers=0))
    assert sum(len(b[2]) for b in batches) == len(ds)  # the epoch completes, a neighbour stands in
    assert str(ds.image_paths[1]) in caplog.text
    assert any(str(ds.image_paths[1]) in p for p in ds.problems)


def test_collate_handles_images_without_boxes():
    img = torch.zeros(3, 32, 32, dtype=torch.uint8)
    batch = [
        (img, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), {"path": "a"}),
        (img, torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.tensor([5]), {"path": "b"}),
    ]
    images, targets, infos = collate(batch)
    assert images.shape == (2, 3, 32, 32)
    assert targets.tolist() == [[1.0, 5.0, 1.0, 2.0, 3.0, 4.0]]
    assert [i["path"] for i in infos] == ["a", "b"]
    _, t, _ = collate(batch[:1])
    assert t.shape == (0, 6)


@pytest.mark.slow
def test_full_shapes_dataset_loads_through_two_workers(tmp_path):
    from yolo4.data.shapes import make_shapes

    y = make_shapes(tmp_path / "shapes", progress=False)
    ds = load_dataset(y, "train")
    n = sum(len(b[2]) for b in _batches(build_loader(ds, 256, 32, AugmentConfig(), True, 2)))
    assert n == len(ds) == 3000
