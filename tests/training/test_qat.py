"""Quantisation-aware training (`yolo4 train --qat`): the settings, the refusals, and a 1-epoch
run on a tiny shapes set whose int8 ONNX matches the fake-quantised PyTorch model."""

from __future__ import annotations

import csv
import functools
import importlib.util
import json

import numpy as np
import pytest
import torch

from yolo4.errors import Yolo4Error
from yolo4.training.config import TrainConfig
from yolo4.training.train import train


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    """A 'trained' yolov4-tiny for the shapes classes: random weights with realistic BN
    statistics, as darknet best.cfg + best.weights."""
    from yolo4.darknet import Darknet, format_cfg, save_weights
    from yolo4.data.dataset import load_dataset
    from yolo4.models.zoo import build

    start = tmp_path_factory.mktemp("qat_start")
    classes = len(load_dataset(tiny_data, "train", progress=False).names)
    torch.manual_seed(0)
    net = Darknet(build("yolov4-tiny", num_classes=classes, img_size=64))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) * 0.5 + 0.05)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
    (start / "best.cfg").write_text(format_cfg(net.spec))
    save_weights(net, start / "best.weights")
    return start / "best.cfg", start / "best.weights"


QAT_KW = dict(epochs=1, burn_in=1, lr=0.001, qat=True, qat_calib_images=8, precise_bn_batches=1)


@pytest.fixture
def qat_cfg(small_cfg):
    """small_cfg with a QAT run's settings (overridable)."""
    return functools.partial(small_cfg, **QAT_KW)


def test_qat_config_round_trips():
    cfg = TrainConfig(qat=True, qat_calib_images=7, qat_export="onnx,openvino", weights="w.weights")
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    parsed = TrainConfig.from_args(["qat=1", "qat_export=onnx,tflite", "qat_calib_images=3"])
    assert parsed.qat and parsed.qat_export == "onnx,tflite" and parsed.qat_calib_images == 3
    assert not TrainConfig().qat


@pytest.mark.parametrize(
    "settings, words",
    [
        ({}, ["--qat", "weights"]),  # no trained model to start from
        ({"weights": "missing.weights"}, ["missing.weights", "not found"]),
        ({"weights": "W", "cmbn": True}, ["cmbn"]),
        ({"weights": "W", "anchors": "kmeans"}, ["anchors=kmeans"]),
        ({"weights": "W", "weights_upto": 10}, ["--weights-upto"]),
        ({"weights": "W", "qat_export": "onnx,caffe"}, ["caffe"]),
        ({"weights": "W", "qat_calib_images": 0}, ["qat_calib_images"]),
        ({"weights": "W", "qat_weight_bits": 4}, ["qat_weight_bits=4", "7"]),
    ],
)
def test_bad_qat_settings_name_the_problem(qat_cfg, tiny_data, trained, tmp_path, settings, words):
    if settings.get("weights") == "W":
        settings = {**settings, "model": str(trained[0]), "weights": str(trained[1])}
    with pytest.raises(Yolo4Error) as e:
        train(qat_cfg(tiny_data, tmp_path / "run", **settings))
    for w in words:
        assert w in str(e.value), str(e.value)


def test_qat_on_other_classes_is_refused(qat_cfg, tiny_data, tmp_path):
    from yolo4.darknet import Darknet, save_weights
    from yolo4.models.zoo import build

    pytest.importorskip("nncf")
    net = Darknet(build("yolov4-tiny", num_classes=80, img_size=64))
    save_weights(net, tmp_path / "coco.weights")
    with pytest.raises(Yolo4Error, match="heads"):
        train(qat_cfg(tiny_data, tmp_path / "run", model="yolov4-tiny", weights=str(tmp_path / "coco.weights")))


QAT_ONNX_ATOL = 0.05  # yolo4.export.qat.QAT_CHECK_ATOL: int8 kernels vs fake-quant, relative to max(1, |out|)


def test_qat_run_writes_an_int8_onnx_that_matches_the_fake_quantised_model(tiny_data, trained, tmp_path):
    pytest.importorskip("nncf")
    tflite = importlib.util.find_spec("litert_torch") is not None
    ort = pytest.importorskip("onnxruntime")
    import onnx

    from yolo4.cli import main
    from yolo4.darknet import load
    from yolo4.export.qat import QAT_CHECK_ATOL, restore_qat
    from yolo4.training.checkpoint import load_checkpoint

    out = tmp_path / "run"
    cfg_path, weights = trained
    rc = main(
        ["train", "--data", str(tiny_data), "--model", str(cfg_path), "--weights", str(weights), "--qat"]
        + ["--epochs", "1", "--batch", "8", "--img-size", "64", "--device", "cpu", "--out", str(out)]
        + [f"--set={kv}" for kv in ("lr=0.001", "mosaic=0", "workers=0", "progress=false", "qat_calib_images=8")]
        + (["--set=qat_export=onnx,tflite"] if tflite else [])
    )
    assert rc == 0
    for name in ("best.pt", "last.pt", "results.csv", "best-int8.onnx", "best.cfg", "best.weights"):
        assert (out / name).is_file(), name
    if tflite:  # its TFLite file keeps the ranges QAT learned: 19 leaky ReLUs' outputs and the upsample's
        from yolo4.inference.runtime import tflite_metadata

        recipe = json.loads(tflite_metadata(out / "best-int8.tflite")["yolo4.quantization"])
        assert "20 layers' outputs: the ranges quantisation-aware training learned" in recipe["activations"]
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["epoch"] for r in rows] == ["0", "1"]  # epoch 0: the calibrated model before any step
    assert all(0.0 <= float(r["val/mAP50"]) <= 1.0 for r in rows) and rows[0]["train/loss"] == ""

    # the ONNX file is int8: QDQ pairs around the convolutions, the QAT recipe in its metadata
    proto = onnx.load(str(out / "best-int8.onnx"))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("QuantizeLinear") >= 10 and ops.count("DequantizeLinear") >= 10
    meta = {p.key: p.value for p in proto.metadata_props}
    assert "quantisation-aware" in json.loads(meta["yolo4.quantization"])["tool"]

    # ... and agrees with best.pt's fake-quantised PyTorch model on an input it was not exported with
    ckpt = load_checkpoint(out / "best.pt")
    qmodel = restore_qat(load(out / "best.cfg", out / "best.weights"), ckpt["qat"])
    qmodel.load_state_dict(ckpt["ema"]["module"])
    qmodel.eval()
    x = torch.from_numpy(np.random.default_rng(3).integers(0, 256, (1, 3, 64, 64)).astype(np.float32) / 255)
    with torch.no_grad():
        ref = [r.numpy() for r in qmodel(x)]
    sess = ort.InferenceSession(str(out / "best-int8.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"images": x.numpy()})
    assert QAT_CHECK_ATOL == QAT_ONNX_ATOL
    for g, r in zip(got, ref):
        assert g.shape == r.shape
        assert np.abs(g - r).max() / max(1.0, float(np.abs(r).max())) <= QAT_ONNX_ATOL
    # the fake-quantised model is not the float one: quantisation is really simulated
    plain = load(out / "best.cfg", out / "best.weights")
    with torch.no_grad():
        floats = [f.numpy() for f in plain(x)]
    assert any(np.abs(f - r).max() > 1e-4 for f, r in zip(floats, ref))


def test_qat_setup_keeps_the_float_models_outputs(qat_cfg, tiny_data, trained, tmp_path):
    """Right after setup (BN folded with the running statistics, quantisers calibrated on the
    training images as `yolo4 detect` prepares them), before any step, the fake-quantised
    network computes what the float one does, up to int8 rounding."""
    pytest.importorskip("nncf")
    from yolo4.darknet import load
    from yolo4.export.qat import is_qat
    from yolo4.training.qat import qat_model

    cfg_path, weights = trained
    cfg = qat_cfg(tiny_data, tmp_path / "run", model=str(cfg_path), weights=str(weights))
    net = load(cfg_path, weights)
    qmodel = qat_model(net, cfg, None, fresh_head=False).eval()
    assert is_qat(qmodel) and not is_qat(net)
    x = torch.from_numpy(np.random.default_rng(5).random((2, 3, 64, 64), dtype=np.float32))
    with torch.no_grad():
        pairs = list(zip(net.eval()(x), qmodel(x.contiguous(memory_format=torch.channels_last))))
    for f, q in pairs:
        rel = float((q - f).norm() / f.norm())
        assert 1e-5 < rel < 0.1, rel  # simulated int8, close to float


@pytest.mark.parametrize("train_ranges", [False, True])
def test_quantiser_ranges_train_unless_frozen(qat_cfg, tiny_data, trained, tmp_path, train_ranges):
    """The optimiser trains the quantisers' ranges with the weights (NNCF's QAT), or with
    qat_train_ranges=false only the weights: the calibrated ranges stay."""
    pytest.importorskip("nncf")
    from nncf.torch.quantization.layers import BaseQuantizer

    from yolo4.darknet import load
    from yolo4.training.build import make_optimizer
    from yolo4.training.qat import qat_model

    cfg_path, weights = trained
    cfg = qat_cfg(tiny_data, tmp_path / "run", model=str(cfg_path), weights=str(weights), qat_train_ranges=train_ranges)
    qmodel = qat_model(load(cfg_path, weights), cfg, None, fresh_head=False)
    ranges = [
        p for m in qmodel.modules() if isinstance(m, BaseQuantizer) for p in m.parameters() if p.is_floating_point()
    ]
    optimised = {id(p) for g in make_optimizer(cfg, qmodel).param_groups for p in g["params"]}
    assert len(ranges) >= 20  # (yolov4-tiny: a weight scale per conv, an activation range per quantised tensor)
    assert all((id(p) in optimised) == train_ranges for p in ranges)
    assert any(id(p) in optimised for p in qmodel.parameters())  # the weights train either way


def test_a_failed_int8_export_after_qat_is_named_and_keeps_the_run(tiny_data, trained, tmp_path, monkeypatch, capsys):
    pytest.importorskip("nncf")
    import yolo4.export
    from yolo4.cli import main

    def refuse(model, options, out, names=None):
        raise RuntimeError("QLinearConv : result zero point must be a scalar")

    monkeypatch.setattr(yolo4.export, "export_model", refuse)
    out = tmp_path / "run"
    cfg_path, weights = trained
    rc = main(
        ["train", "--data", str(tiny_data), "--model", str(cfg_path), "--weights", str(weights), "--qat"]
        + ["--epochs", "1", "--batch", "8", "--img-size", "64", "--device", "cpu", "--out", str(out)]
        + [f"--set={kv}" for kv in ("lr=0.0001", "workers=0", "progress=false", "qat_calib_images=8")]
    )
    err = capsys.readouterr().err
    assert rc != 0 and "best-int8.onnx" in err and "zero point must be a scalar" in err
    for name in ("best.pt", "last.pt", "best.cfg", "best.weights"):  # nothing done is lost
        assert (out / name).is_file(), name


@pytest.mark.parametrize("scores, best_epoch", [((0.5, 0.3), 0), ((0.3, 0.5), 1)])
def test_best_pt_chooses_between_the_calibrated_start_and_the_trained_epoch(
    qat_cfg, tiny_data, trained, tmp_path, monkeypatch, capsys, scores, best_epoch
):
    """A QAT run validates its calibrated model before the first step (epoch 0, the PTQ point):
    best.pt, and so the exported int8 model, is the trained epoch only when it scores better."""
    pytest.importorskip("nncf")
    import yolo4.training.hooks as hooks
    from yolo4.training.checkpoint import load_checkpoint

    calls: list[int] = []

    def scripted(state):
        calls.append(state.epoch)
        m = scores[len(calls) - 1]
        return {"val/mAP50": m, "val/mAP50-95": m / 2}

    monkeypatch.setattr(hooks, "validate_model", scripted)
    cfg_path, weights = trained
    result = train(qat_cfg(tiny_data, tmp_path / "run", model=str(cfg_path), weights=str(weights), export=False))
    assert calls == [0, 1]
    assert [r["epoch"] for r in result.history] == [0, 1] and result.best_map50 == max(scores)
    assert load_checkpoint(tmp_path / "run" / "best.pt")["epoch"] == best_epoch
    err = capsys.readouterr().err
    assert "epoch 0 (the calibrated int8 model before any step" in err
    assert f"best epoch {best_epoch} of 1 (best.pt)" in err


def _two_new_coords_heads_cfg() -> str:
    """Two Scaled-YOLOv4-style heads (logistic conv -> [yolo] new_coords=1), the first one followed
    by more layers, as in yolov4-csp: the layout that broke NNCF's hooks."""
    head = (
        "[convolutional]\nfilters=21\nsize=1\nstride=1\npad=1\nactivation=logistic\n"
        "[yolo]\nmask=0,1,2\nanchors=10,14, 23,27, 37,58\nclasses=2\nnum=3\nscale_x_y=2.0\nnew_coords=1\n"
    )
    conv = "[convolutional]\nbatch_normalize=1\nfilters={f}\nsize=3\nstride=2\npad=1\nactivation=leaky\n"
    return (
        "[net]\nwidth=64\nheight=64\nchannels=3\n"
        + conv.format(f=8)
        + head
        + "[route]\nlayers=-3\n"
        + conv.format(f=16)
        + head
    )


def test_qat_trains_new_coords_heads_on_their_logits():
    """A QAT network with yolov4-csp's heads: training mode hands the loss the logits (it used to
    fail inside NNCF's quantisers with a channel-count mismatch once a head was followed by more
    layers), the gradient reaches the weights, and eval mode gives their logistic."""
    pytest.importorskip("nncf")
    from yolo4.darknet import Darknet, parse_cfg
    from yolo4.export.qat import prepare_qat

    torch.manual_seed(0)
    qmodel = prepare_qat(Darknet(parse_cfg(_two_new_coords_heads_cfg())), torch.rand(4, 3, 64, 64))
    x = torch.rand(2, 3, 64, 64)
    logits = qmodel.train()(x)
    assert [tuple(o.shape) for o in logits] == [(2, 21, 32, 32), (2, 21, 16, 16)]
    assert all(o.min() < 0 for o in logits)  # logits, not probabilities
    sum(o.sum() for o in logits).backward()
    grads = [p.grad for n, p in qmodel.named_parameters() if n.endswith("weight") and p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
    with torch.no_grad():
        probs = qmodel.eval()(x)
    for lg, pr in zip(logits, probs):
        torch.testing.assert_close(torch.sigmoid(lg.detach()), pr)


def test_learned_ranges_name_the_block_each_quantiser_serves(trained):
    """Each range `learned_ranges` gives block i is the one its output is fake-quantised with:
    the block's output in the QAT model lies on that int8 grid, inside it."""
    pytest.importorskip("nncf")
    from yolo4.darknet import load
    from yolo4.darknet.layers import Conv
    from yolo4.export.qat import learned_ranges, prepare_qat

    net = load(*trained).eval()
    x = torch.from_numpy(np.random.default_rng(0).random((8, 3, 64, 64), dtype=np.float32))
    qmodel = prepare_qat(net, x, batch=4).eval()
    ranges = learned_ranges(qmodel, x[:1])
    leaky = [i for i, b in enumerate(qmodel.blocks) if isinstance(b, Conv) and isinstance(b.act, torch.nn.LeakyReLU)]
    assert set(leaky) <= set(ranges) and all(lo < hi for lo, hi in ranges.values())
    outputs: dict[int, torch.Tensor] = {}
    hooks = [qmodel.blocks[i].register_forward_hook(lambda m, a, out, i=i: outputs.__setitem__(i, out)) for i in ranges]
    with torch.no_grad():
        qmodel(x[1:2])
    for h in hooks:
        h.remove()
    for i, (lo, hi) in ranges.items():
        step = (hi - lo) / 255
        codes = (outputs[i] - lo) / step
        assert float(codes.min()) > -0.01 and float(codes.max()) < 255.01, i
        assert float((codes - codes.round()).abs().max()) < 0.02, i  # on the grid: this quantiser made it


def test_an_interrupted_qat_run_resumes_as_the_uninterrupted_one(qat_cfg, tiny_data, trained, tmp_path):
    """`--resume` of a QAT run stopped by SIGTERM rebuilds its quantisers from the checkpoint (the
    7-bit weight quantisers stay 7-bit) and ends with the weights, ranges and losses of the run
    that was not interrupted."""
    pytest.importorskip("nncf")
    import os
    import signal

    from yolo4.training.checkpoint import load_checkpoint
    from yolo4.training.hooks import Hook

    class _TermAt(Hook):
        def on_step_end(self, state) -> None:
            if state.step == 5:  # in epoch 2 (4 steps an epoch): the run stops after step 6
                os.kill(os.getpid(), signal.SIGTERM)

    cfg_path, weights = trained
    kw = dict(model=str(cfg_path), weights=str(weights), epochs=2, batch=4, lr=0.0001, qat_export="onnx")
    straight = train(qat_cfg(tiny_data, tmp_path / "straight", **kw))
    cut = train(qat_cfg(tiny_data, tmp_path / "cut", **kw), hooks=[_TermAt()])
    assert straight.signal is None and cut.signal == signal.SIGTERM
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["step"] == 6
    resumed = train(TrainConfig(resume=str(tmp_path / "cut"), device="cpu", workers=0, progress=False))
    assert resumed.signal is None and resumed.epochs == 2

    a, b = load_checkpoint(tmp_path / "straight" / "last.pt"), load_checkpoint(tmp_path / "cut" / "last.pt")
    assert '"half_range": true' in json.dumps(b["qat"]) and a["qat"] == b["qat"]
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"]) == (2, 8)
    assert [r["train/loss"] for r in a["history"][1:]] == pytest.approx([r["train/loss"] for r in b["history"][1:]])
    for part in ("model", "ema"):
        sa, sb = (a[part], b[part]) if part == "model" else (a[part]["module"], b[part]["module"])
        assert any("quantizer" in k or "hooks" in k for k in sa)  # the quantisers' ranges are compared too
        for k in sa:
            torch.testing.assert_close(sa[k], sb[k], rtol=1e-5, atol=1e-6, msg=f"{part}: {k}")
    assert (tmp_path / "cut" / "best-int8.onnx").is_file()
