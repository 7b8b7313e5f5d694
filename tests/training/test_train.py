"""The training loop and its parts: schedules, EMA, config, parameter groups, starting points,
a small end-to-end run, exact resume, NaN steps skipped."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from yolo4.errors import Yolo4Error
from yolo4.training.build import build_model, kmeans_anchors, param_groups
from yolo4.training.checkpoint import load_checkpoint
from yolo4.training.config import TrainConfig
from yolo4.training.ema import ModelEMA
from yolo4.training.hooks import Hook, plan_epochs
from yolo4.training.schedule import ScheduleConfig, burn_in_factor, lr_at, sgdr_factor
from yolo4.training.state import TrainState, epoch_img_size
from yolo4.training.train import train


# ------------------------------------------------------------------ schedules
def test_burn_in_is_darknets_power_rule():
    assert burn_in_factor(0, 100) == 0.0
    assert burn_in_factor(50, 100) == pytest.approx(0.5**4)
    assert burn_in_factor(100, 100) == 1.0 and burn_in_factor(5, 0) == 1.0


def test_steps_policy():
    s = ScheduleConfig(policy="steps", burn_in=0, steps=(0.5, 0.75), scales=(0.1, 0.5))
    assert lr_at(49, 1.0, 100, s) == 1.0
    assert lr_at(50, 1.0, 100, s) == pytest.approx(0.1)
    assert lr_at(99, 1.0, 100, s) == pytest.approx(0.05)
    absolute = ScheduleConfig(policy="steps", burn_in=0, steps=(400, 450), scales=(0.1, 0.1))
    assert lr_at(420, 1.0, 1000, absolute) == pytest.approx(0.1)


def test_cosine_policy_endpoints_and_monotone():
    s = ScheduleConfig(policy="cosine", burn_in=10, final_ratio=0.01)
    lrs = [lr_at(k, 2.0, 110, s) for k in range(111)]
    assert lrs[5] == pytest.approx(2.0 * 0.5**4 * 1.0)  # burn-in on top of the start of the cosine
    assert lrs[10] == pytest.approx(2.0) and lrs[110] == pytest.approx(0.02)
    assert lrs[60] == pytest.approx(2.0 * (0.01 + 0.99 * 0.5))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_sgdr_restarts():
    assert sgdr_factor(0, 0, 10, 2.0, 0.0) == 1.0
    assert sgdr_factor(9, 0, 10, 2.0, 0.0) < 0.05
    assert sgdr_factor(10, 0, 10, 2.0, 0.0) == 1.0  # restart, next cycle is 20 long
    assert sgdr_factor(20, 0, 10, 2.0, 0.0) == pytest.approx(0.5)
    assert sgdr_factor(30, 0, 10, 2.0, 0.0) == 1.0
    with pytest.raises(ValueError, match="policy"):
        ScheduleConfig(policy="poly")


# ------------------------------------------------------------------ EMA, config, groups
def test_ema_follows_weights_with_ramped_decay():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = ModelEMA(model, decay=0.9, tau=1.0)
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[1].num_batches_tracked.fill_(7)
    d = ema.current_decay()
    assert d == pytest.approx(0.9 * (1 - math.exp(-1)))
    before = ema.module[0].weight.clone()
    ema.update(model)
    torch.testing.assert_close(ema.module[0].weight, d * before + (1 - d) * torch.ones(2, 2))
    assert ema.module[1].num_batches_tracked.item() == 7  # integer buffers copied
    other = ModelEMA(model)
    other.load_state_dict(ema.state_dict())
    assert other.updates == 1 and torch.equal(other.module[0].weight, ema.module[0].weight)


def test_config_from_args():
    cfg = TrainConfig.from_args(["lr=0.02", "mosaic=0", "steps=0.7,0.9", "ema=false", "weights=none", "iou_loss=giou"])
    assert (cfg.lr, cfg.mosaic, cfg.steps, cfg.ema, cfg.weights, cfg.iou_loss) == (
        0.02,
        0.0,
        (0.7, 0.9),
        False,
        None,
        "giou",
    )
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(Yolo4Error, match="expected KEY=VALUE"):
        TrainConfig.from_args(["learning_rate=1"])
    with pytest.raises(Yolo4Error, match="not a valid"):
        TrainConfig.from_args(["epochs=ten"])


def test_no_weight_decay_on_bn_and_biases():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))
    decay, no_decay = param_groups(model, 5e-4)
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert ids(decay["params"]) == {id(model[0].weight), id(model[2].weight)}
    assert ids(no_decay["params"]) == {id(model[1].weight), id(model[1].bias), id(model[2].bias)}


def test_kmeans_anchors_recovers_clusters():
    rng = np.random.default_rng(0)
    wh = np.concatenate([rng.normal(c, 1.0, (50, 2)) for c in (10, 40, 100)])
    anchors = kmeans_anchors(wh, 3)
    assert [round(a[0] / 10) * 10 for a in anchors] == [10, 40, 100]


def test_kmeans_anchors_fill_every_mask_finest_grid_smallest():
    from yolo4.darknet import Darknet
    from yolo4.models.zoo import resolve_spec
    from yolo4.training.build import set_kmeans_anchors

    spec = resolve_spec("yolov4-tiny", num_classes=3, img_size=256)  # official masks 3,4,5 (13x13) and 1,2,3
    wh = np.random.default_rng(0).uniform(8, 120, (400, 2))
    set_kmeans_anchors(spec, wh, 256)
    coarse, fine = spec.yolo_layers  # tiny lists its 8x8 head first
    assert fine.mask == [0, 1, 2] and coarse.mask == [3, 4, 5]  # all six used, none twice
    areas = [w * h for w, h in coarse.anchors]
    assert areas == sorted(areas) and coarse.anchors == fine.anchors and fine.num == 6
    Darknet(spec)  # still a valid network with the same head widths


def test_time_budget_epochs():
    cfg = TrainConfig(time_budget_min=10)
    assert plan_epochs(cfg, [(100, False)], 100, 50) == 6
    assert plan_epochs(cfg, [(100, False)], 100, 3) == 3
    assert plan_epochs(TrainConfig(time_budget_min=1), [(100, False)], 100, 50) == 1
    assert plan_epochs(cfg, [(90, False)] * 5, 450, 50) == 6  # re-planned later in the run
    assert plan_epochs(cfg, [(140, False)] * 5, 700, 50) == 5  # over budget: stop now
    # one slow epoch (another job on the machine) does not cut the run: medians predict
    assert plan_epochs(cfg, [(50, False), (50, False), (200, False)], 300, 50) == 9
    # a plan in force grows only with half an epoch to spare, and shrinks at once
    assert plan_epochs(cfg, [(100, False)] * 2, 200, 50, current=5) == 5  # 6 fit exactly: no flip
    assert plan_epochs(cfg, [(90, False)] * 2, 180, 50, current=5) == 6  # 6 leave 60 s: grow
    assert plan_epochs(cfg, [(120, False)] * 2, 240, 50, current=6) == 5


def test_time_budget_plans_from_the_first_steps_and_replans_warm_up_and_ema(monkeypatch):
    """A 40-epoch config on a machine that fits 3 epochs in the budget: after a tenth of the
    first epoch the run is planned to 3 epochs, with the warm-up and EMA horizon of 3 epochs
    (not 3 epochs of warm-up out of 3), and the lr schedule follows."""
    import yolo4.training.hooks as hooks
    from yolo4.training.distributed import DistInfo

    clock = [0.0]
    monkeypatch.setattr(hooks.time, "time", lambda: clock[0])
    cfg = TrainConfig(
        epochs=40, time_budget_min=5.5, burn_in=300, burn_in_power=4.0, ema_decay=1 - 1 / 400, ema_tau=400.0
    )
    state = TrainState(
        cfg=cfg, out_dir=Path("."), model=torch.nn.Identity(), optimizer=torch.optim.SGD([nn.Parameter(torch.zeros(1))]),
        scaler=None, device=torch.device("cpu"), dist=DistInfo(), names=[], loss_fn=None, base_lr=0.01, epochs=40,  # type: ignore[arg-type]
        steps_per_epoch=100, planned=frozenset({"burn_in", "ema_decay", "ema_tau"}),
    )  # fmt: skip
    budget, schedule = hooks.TimeBudgetHook(), hooks.ScheduleHook()
    for h in (budget, schedule):
        h.on_start(state)
    budget.on_epoch_start(state)
    lrs = []
    for _ in range(10):  # each step takes 1 s: 100 s per epoch, 3 fit into 330 s
        schedule.on_step_start(state)
        lrs.append(state.optimizer.param_groups[0]["lr"])
        clock[0] += 1.0
        state.step += 1
        state.epoch_step += 1
        budget.on_step_end(state)
    assert state.epochs == 3 and state.cfg.burn_in == 60  # a fifth of 3 epochs
    assert state.cfg.ema_decay == pytest.approx(1 - 1 / 30) and cfg.burn_in == 300  # (the user's config untouched)
    schedule.on_step_start(state)
    assert state.optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * (10 / 60) ** 4)  # the new warm-up
    assert lrs[-1] == pytest.approx(0.01 * (9 / 300) ** 4)


def test_progressive_resizing_sizes_and_budget():
    cfg = TrainConfig(epochs=10, img_size=256, small_img_size=128, small_img_epochs=0.5)
    assert [epoch_img_size(cfg, e) for e in range(10)] == [128] * 5 + [256] * 5
    assert epoch_img_size(cfg, 3, epochs=6) == 256  # a shorter plan has fewer small epochs
    cfg.time_budget_min = 10
    # one small epoch of 25 s predicts full-size ones at 100 s (area ratio 1/4);
    # 9 epochs (4 small, 5 full): 25 + 3 * 25 + 5 * 100 = 600 s
    assert plan_epochs(cfg, [(25, True)], 25, 50) == 9
    # once a full-size epoch has been timed (50 s) that time is used, and every later epoch is full
    # size (the run never goes back to the small one): 5 done in 150 s, then 9 full: 600 s
    assert plan_epochs(cfg, [(25, True)] * 4 + [(50, False)], 150, 50) == 14


def test_progressive_resizing_never_goes_back_to_the_small_size():
    cfg = TrainConfig(epochs=10, img_size=256, small_img_size=128, small_img_epochs=0.5)
    state = TrainState(
        cfg=cfg, out_dir=Path("."), model=torch.nn.Identity(), optimizer=None, scaler=None,  # type: ignore[arg-type]
        device=torch.device("cpu"), dist=None, names=[], loss_fn=None, base_lr=0.0, epochs=10, steps_per_epoch=1,  # type: ignore[arg-type]
    )  # fmt: skip
    state.history = [{"epoch": e + 1, "img_size": state.img_size(e)} for e in range(6)]  # 5 small, 1 full
    assert [r["img_size"] for r in state.history] == [128] * 5 + [256]
    state.epochs = 14  # the budget re-plans a longer run: the switch would now come after epoch 7
    assert epoch_img_size(cfg, 6, 14) == 128 and state.img_size(6) == 256
    assert state.img_size(3) == 128  # (epochs before the first full one keep their size)


# ------------------------------------------------------------------ starting points
def test_num_classes_change_recreates_only_heads(tmp_path):
    from yolo4.darknet import Darknet, save_weights
    from yolo4.models.zoo import build

    src = Darknet(build("yolov4-tiny", num_classes=80, img_size=64))
    save_weights(src, tmp_path / "coco.weights")
    cfg = TrainConfig(model="yolov4-tiny", weights=str(tmp_path / "coco.weights"), img_size=64)
    model, fresh = build_model(cfg, [f"c{i}" for i in range(7)])
    assert fresh and model.yolo_layers[0].classes == 7
    heads = {i - 1 for i in model.head_indices}
    src_sd, sd = src.state_dict(), model.state_dict()
    for k, v in sd.items():
        layer = int(k.split(".")[1])
        if layer in heads:
            assert v.shape != src_sd[k].shape or k.endswith("num_batches_tracked")
        else:
            assert torch.equal(v, src_sd[k]), k
    # same classes: the full file is used as is
    same, fresh_same = build_model(cfg, [f"c{i}" for i in range(80)])
    assert not fresh_same and all(torch.equal(v, src_sd[k]) for k, v in same.state_dict().items())


# ------------------------------------------------------------------ the loop
def test_small_run_writes_everything(small_cfg, tiny_data, tmp_path):
    from yolo4.darknet import load

    out = tmp_path / "run"
    result = train(small_cfg(tiny_data, out, freeze=3, amp=True))
    for name in ("last.pt", "best.pt", "results.csv", "results.png", "best.cfg", "best.weights", "config.json"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(0 <= float(r["val/mAP50"]) <= 1 and math.isfinite(float(r["train/loss"])) for r in rows)
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["epoch"] == 2 and ckpt["step"] == 4
    # frozen layers did not move; the exported darknet files reproduce the EMA model
    from yolo4.darknet import Darknet
    from yolo4.models.zoo import resolve_spec

    net = load(out / "best.cfg", out / "best.weights")
    best = load_checkpoint(out / "best.pt")
    ema = Darknet(net.spec)
    ema.load_state_dict(best["ema"]["module"])
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(net(x), ema.eval()(x)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert result.best_weights == out / "best.weights"
    assert resolve_spec("yolov4-tiny").layers[0].filters == net.spec.layers[0].filters


class _Stop(Exception):
    pass


class _StopAt(Hook):
    """Stops the run at optimizer step `step` (the loop leaves the epoch after it), or crashes there."""

    def __init__(self, step: int, crash: bool = False):
        self.at, self.crash = step, crash

    def on_step_end(self, state: TrainState) -> None:
        if state.step == self.at:
            if self.crash:
                raise _Stop
            state.stop = "test stop"


RESUME_KW = dict(epochs=3, mosaic=0.5, flip=0.5)


@pytest.fixture(scope="module")
def straight_run(small_cfg, tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    train(small_cfg(tiny_data, out, **RESUME_KW))
    return out


@pytest.mark.parametrize("crash", [False, True], ids=["stop", "crash"])
def test_resume_continues_exactly(small_cfg, tiny_data, straight_run, tmp_path, crash):
    """A run stopped by a hook (or crashed) in the middle of epoch 2 keeps last.pt of epoch 1;
    --resume repeats epoch 2 and ends with the weights of a run that was never stopped."""
    kw = RESUME_KW
    if crash:
        with pytest.raises(_Stop):
            train(small_cfg(tiny_data, tmp_path / "broken", **kw), hooks=[_StopAt(3, crash=True)])
    else:
        stopped = train(small_cfg(tiny_data, tmp_path / "broken", **kw), hooks=[_StopAt(3)])
        assert stopped.stopped == "test stop" and stopped.epochs == 1
    assert load_checkpoint(tmp_path / "broken" / "last.pt")["epoch"] == 1
    train(TrainConfig(resume=str(tmp_path / "broken"), device="cpu", workers=0, progress=False))
    a = load_checkpoint(straight_run / "last.pt")
    b = load_checkpoint(tmp_path / "broken" / "last.pt")
    assert a["step"] == b["step"] == 6
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-5, atol=1e-6, msg=k)
    for k in a["ema"]["module"]:
        torch.testing.assert_close(a["ema"]["module"][k], b["ema"]["module"][k], rtol=1e-5, atol=1e-6, msg=k)
    assert [r["train/loss"] for r in a["history"]] == pytest.approx([r["train/loss"] for r in b["history"]], rel=1e-5)


class _NanOnce(Hook):
    """Makes the network's second training call NaN: its outputs (`what="loss"`), or only the
    gradient flowing back into them, the loss staying finite (`what="gradient"`)."""

    def __init__(self, what: str):
        self.what = what

    def on_start(self, state):
        calls = {"n": 0}

        def hook(module, inputs, outputs):
            if module.training:
                calls["n"] += 1
                if calls["n"] == 2:
                    if self.what == "loss":
                        return [o * float("nan") for o in outputs]
                    outputs[0].register_hook(lambda g: g * float("nan"))
            return outputs

        from yolo4.training.ema import unwrap

        unwrap(state.model).register_forward_hook(hook)


@pytest.mark.parametrize("what", ["loss", "gradient"])
def test_nan_step_is_skipped_and_training_goes_on(small_cfg, tiny_data, tmp_path, capsys, what):
    result = train(small_cfg(tiny_data, tmp_path / "nan", epochs=2), hooks=[_NanOnce(what)])
    ckpt = load_checkpoint(tmp_path / "nan" / "last.pt")
    assert ckpt["nan_skipped"] == 1
    assert ckpt["step"] == 3  # 2 epochs x 2 steps, one skipped
    assert all(math.isfinite(r["train/loss"]) for r in result.history)
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert f"non-finite {what}" in capsys.readouterr().err


# ------------------------------------------------------------------ backbone/data freebies
def test_self_adversarial_pass_raises_the_loss():
    from yolo4.darknet import Darknet
    from yolo4.models.zoo import build
    from yolo4.ops.losses import YoloLoss
    from yolo4.training.train import adversarial_images

    torch.manual_seed(0)
    net = Darknet(build("yolov4-tiny", num_classes=3, img_size=64)).eval()
    loss_fn = YoloLoss(net.yolo_layers)
    x = torch.rand(2, 3, 64, 64)
    t = torch.tensor([[0, 1, 8.0, 8.0, 40.0, 30.0], [1, 2, 20.0, 20.0, 50.0, 60.0]])
    adv = adversarial_images(net, loss_fn, x, t, eps=0.03)
    assert adv.shape == x.shape and adv.min() >= 0 and adv.max() <= 1
    assert (adv - x).abs().max() <= 0.03 + 1e-6 and not torch.equal(adv, x)
    with torch.no_grad():
        assert loss_fn(net(adv), t, (64, 64))[0] > loss_fn(net(x), t, (64, 64))[0]


def test_dropblock_schedule_scales_the_rate():
    from yolo4.darknet import Darknet, parse_cfg
    from yolo4.darknet.network import DropoutDarknet
    from yolo4.training.build import set_drop_scale

    spec = parse_cfg(
        "[net]\nwidth=32\nheight=32\nchannels=3\n[convolutional]\nfilters=8\nsize=3\nstride=1\npad=1\n"
        "activation=leaky\n[dropout]\nprobability=0.5\ndropblock=1\ndropblock_size_abs=3\n"
    )
    net = Darknet(spec).train()
    drop = [m for m in net.modules() if isinstance(m, DropoutDarknet)][0]
    x = torch.rand(1, 3, 32, 32) + 0.1
    set_drop_scale(net, 0.0)
    assert drop.drop_scale == 0.0 and torch.equal(net.blocks[1](x, []), x)  # rate 0: identity
    set_drop_scale(net, 1.0)
    torch.manual_seed(0)
    assert (net.blocks[1](x, []) == 0).float().mean() > 0.2  # blocks dropped at the full rate


def test_precise_bn_replaces_lagging_running_stats():
    from yolo4.training.validation import recompute_bn_stats

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, momentum=0.03), nn.Dropout(0.5))
    batches = [torch.randn(2, 3, 5, 5) * 3 + 2 for _ in range(3)]
    with torch.no_grad():
        feats = [model[0](x) for x in batches]
    expect_mean = torch.stack([f.mean((0, 2, 3)) for f in feats]).mean(0)
    expect_var = torch.stack([f.var((0, 2, 3), unbiased=True) for f in feats]).mean(0)
    model.train()
    assert recompute_bn_stats(model, batches) == 3
    torch.testing.assert_close(model[1].running_mean, expect_mean)
    torch.testing.assert_close(model[1].running_var, expect_var)
    assert model.training and model[1].momentum == 0.03  # mode and momentum restored


class _CmbnProbe(Hook):
    """Records, after every optimizer step, how many values per channel the CmBN layers hold."""

    def __init__(self):
        self.counts = []

    def on_step_end(self, state):
        from yolo4.darknet import CmBatchNorm2d

        self.counts.append({m.acc_count for m in state.model.modules() if isinstance(m, CmBatchNorm2d)})


def test_cmbn_switch_accumulates_within_a_step_only(small_cfg, tiny_data, tmp_path):
    from yolo4.darknet import CmBatchNorm2d, parse_cfg

    names = ["a", "b", "c"]
    plain, _ = build_model(small_cfg(tiny_data, tmp_path), names)
    assert not any(isinstance(m, CmBatchNorm2d) for m in plain.modules())
    out = tmp_path / "cmbn"
    probe = _CmbnProbe()
    train(small_cfg(tiny_data, out, epochs=1, subdivisions=2, cmbn=True), hooks=[probe])
    # 2 steps of 2 mini-batches of 4 images: the first layer (64x64 -> 32x32, stride 2) has seen
    # 2 x 4 x 32 x 32 values when each step ends, never more: every step starts afresh
    first = [m for m in parse_cfg(load_checkpoint(out / "last.pt")["cfg_text"]).layers if hasattr(m, "batch_normalize")]
    assert first[0].batch_normalize == 2
    assert len(probe.counts) == 2 and all(2 * 4 * 32 * 32 in c for c in probe.counts)
    assert "batch_normalize=2" not in (out / "best.cfg").read_text()  # OpenCV reads only 1 as BN


@pytest.mark.parametrize("key", ["img_size", "small_img_size", "val_img_size"])
def test_input_sizes_must_fit_the_stride(small_cfg, tiny_data, tmp_path, key):
    with pytest.raises(Yolo4Error, match=f"{key}=100: .*multiples of 32"):
        train(small_cfg(tiny_data, tmp_path / "run", **{key: 100}))
    assert not (tmp_path / "run" / "last.pt").exists()


class _Recorder(Hook):
    """Records the hook calls, and what the state holds when this user hook sees it."""

    def __init__(self):
        self.calls: list[str] = []

    def on_start(self, state):
        self.calls.append("start")
        assert state.ema is not None  # the built-in hooks have run first

    def on_epoch_start(self, state):
        self.calls.append("epoch_start")

    def on_step_start(self, state):
        self.calls.append("step_start")

    def on_step_end(self, state):
        self.calls.append("step_end")

    def on_epoch_end(self, state):
        self.calls.append("epoch_end")
        assert {"train/loss", "val/mAP50", "time_s"} <= set(state.row)
        assert (state.out_dir / "last.pt").is_file()

    def on_end(self, state):
        self.calls.append("end")


def test_time_budget_plans_in_the_state_not_the_config(small_cfg, tiny_data, tmp_path):
    """A budget too small for a second epoch ends the run after one; the user's config (as given
    and as saved in the checkpoint) still says 3 epochs, the checkpoint's plan says 1."""
    cfg = small_cfg(tiny_data, tmp_path / "budget", epochs=3, time_budget_min=1e-4, export=False)
    before = cfg.to_dict()
    rec = _Recorder()
    result = train(cfg, hooks=[rec])
    assert cfg.to_dict() == before
    ckpt = load_checkpoint(tmp_path / "budget" / "last.pt")
    assert (result.epochs, ckpt["epoch"], ckpt["epochs"], ckpt["config"]["epochs"]) == (1, 1, 1, 3)
    assert rec.calls == ["start", "epoch_start"] + ["step_start", "step_end"] * 2 + ["epoch_end", "end"]
    assert result.stopped is None and result.best_weights is None  # export=False


def test_hooks_must_be_hooks(small_cfg, tiny_data, tmp_path):
    class Duck:
        def on_start(self, state): ...

    with pytest.raises(TypeError, match="not a yolo4.training.hooks.Hook"):
        train(small_cfg(tiny_data, tmp_path / "run"), hooks=[Duck()])


def test_run_train_reads_a_config_file(tmp_path, monkeypatch):
    """`yolo4 train --config best.yaml`: the file first, then --set, then the options."""
    import yolo4.training.run as run

    seen: list[TrainConfig] = []
    monkeypatch.setattr(run, "train", seen.append)
    path = tmp_path / "best.yaml"
    path.write_text("data: d.yaml\nlr: 0.02\nmosaic: 0.5\nepochs: 7\n")
    run.run_train(config=path, options=["mosaic=0.25"], epochs=9)
    assert (seen[0].data, seen[0].lr, seen[0].mosaic, seen[0].epochs) == ("d.yaml", 0.02, 0.25, 9)
    path.write_text("lr: fast\n")
    with pytest.raises(Yolo4Error, match="best.yaml: train option lr='fast'"):
        run.run_train(config=path)


# ------------------------------------------------------------------ best epoch and early stopping
def _row(epoch, m50=None, m=None):
    r = {"epoch": epoch, "train/loss": 1.0}
    if m50 is not None:
        r["val/mAP50"], r["val/mAP50-95"] = m50, m
    return r


def test_progress_note_and_best_row():
    from yolo4.training.state import best_row, progress_note

    h = [_row(1, 0.2, 0.05)]
    assert progress_note(h) == "best so far" and best_row(h) is h[0]
    h.append(_row(2))  # not validated: nothing to say
    assert progress_note(h) == ""
    h.append(_row(3, 0.5, 0.04))  # better mAP50, worse mAP50-95: fitness 0.086 against 0.065 -> better
    assert progress_note(h) == "best so far"
    h.append(_row(4, 0.6, 0.01))  # fitness 0.069 < 0.086
    assert progress_note(h) == "no better for 1 epoch (best: epoch 3, mAP50-95 0.0400, mAP50 0.5000)"
    h.append(_row(5, 0.5, 0.04))  # equal to the best: the first stays the best
    assert progress_note(h).startswith("no better for 2 epochs (best: epoch 3")
    assert best_row([_row(1), _row(2)]) is None


def test_patience_stops_a_run_that_stops_improving(small_cfg, tiny_data, tmp_path, capsys):
    # lr 0: the weights never change, so no epoch beats the first one
    result = train(small_cfg(tiny_data, tmp_path / "p", epochs=5, lr=0.0, patience=2, ema=False, precise_bn_batches=0))
    assert result.epochs == 3 and result.stopped.startswith("early stop: no better mAP50-95 for 2 epochs")
    err = capsys.readouterr().err
    assert "epoch 1/5:" in err and "best so far" in err and "no better for 2 epochs (best: epoch 1" in err
    assert "best epoch 1 of 3 (best.pt)" in err
    # patience 0: never stops
    assert train(small_cfg(tiny_data, tmp_path / "q", epochs=3, lr=0.0, patience=0, ema=False)).epochs == 3


def test_validation_leaves_out_images_that_cannot_be_decoded():
    from yolo4.errors import DataError
    from yolo4.training.validation import readable_subset

    class _Val:
        def __init__(self, ids):
            self.ids = ids

        def __len__(self):
            return len(self.ids)

        def load(self, i):
            if self.ids[i] == 1:
                raise DataError("1.jpg: not a readable image: a truncated or corrupt JPEG file")
            return np.zeros((4, 4, 3), np.uint8), np.zeros((0, 4)), np.zeros(0, np.int64)

        def subset(self, idx):
            return _Val([self.ids[i] for i in idx])

    kept, problems = readable_subset(_Val([0, 1, 2]))
    assert kept.ids == [0, 2] and problems == ["1.jpg: not a readable image: a truncated or corrupt JPEG file"]
    whole = _Val([0, 2])
    assert readable_subset(whole) == (whole, [])
