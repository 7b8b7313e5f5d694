"""yolo4.cli: one vocabulary in every subcommand, what each command hands to yolo4.api, and
every old spelling (still accepted for one release, with a warning naming the new one).

The api functions are replaced by recorders here: these tests are about the command line;
the functions themselves are tested in their own modules and in test_api.py."""

from __future__ import annotations

import subprocess
import sys

import pytest

import yolo4.api
from yolo4.cli import CALIB_METHODS, FORMATS, INT8_TOOLS, OUTPUT_KINDS, RESIZE_RULES, RUNTIMES, build_parser, main
from yolo4.ops.nms_config import DETECT_POSTPROCESS, VAL_POSTPROCESS

SUBCOMMANDS = ("info", "detect", "track", "train", "tune", "val", "export", "benchmark")


class _Record:
    def __init__(self, result=None):
        self.calls: list[tuple[tuple, dict]] = []
        self.result = result

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return self.result


class _Summary:
    processed = detected = 1

    def summary(self) -> str:
        return "timed"


@pytest.fixture
def api(monkeypatch):
    """Replace the api functions the CLI calls; returns {name: recorder}."""
    recorders = {
        "info": _Record(),
        "detect": _Record(_Summary()),
        "train": _Record(),
        "tune": _Record(),
        "val": _Record([]),
        "export": _Record(),
        "benchmark": _Record(_Summary()),
        "track": _Record(),
        "detect_dataset": _Record(_Summary()),
    }
    for name, rec in recorders.items():
        monkeypatch.setattr(yolo4.api, name, rec)
    return recorders


def _call(api, name: str, argv: list[str], capsys) -> tuple[tuple, dict, str]:
    """Run `yolo4 argv`; returns the one call made to api.<name> and stderr."""
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert len(api[name].calls) == 1, f"{argv}: {api[name].calls}"
    args, kwargs = api[name].calls.pop()
    return args, kwargs, err


# ------------------------------------------------------------------ help and vocabulary
def test_help_is_instant_and_names_the_vocabulary():
    """`yolo4 --help` needs no torch; it lists the shared option names."""
    code = "import sys, yolo4.cli; yolo4.cli.build_parser().format_help(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    text = build_parser().format_help()
    for word in ("--model M", "--weights W", "--data DATA", "--device D", "--out PATH", "--json FILE", "--max-det"):
        assert word in text


def _help(*command: str) -> str:
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[command[0]]
    if len(command) > 1:
        sub = sub._subparsers._group_actions[0].choices[command[1]]
    return sub.format_help()


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_command_reads_the_same_way(command):
    text = _help(command)
    assert "--model M" in text  # one way to name a model
    for old in ("--cfg", "--save-dir", "--save-json", "--decode", "--plot"):
        assert old not in text  # old spellings are hidden
    if command in ("detect", "track", "val", "benchmark", "train", "tune"):
        assert "--device D" in text and "auto (default: CUDA when PyTorch sees a GPU" in text
    if command in ("detect", "track", "val", "benchmark", "export"):
        assert "post-processing:" in text and "--max-det N" in text and "{greedy,agnostic,diou}" in text
    if command in ("detect", "track", "val", "train", "tune", "export"):
        assert "--out PATH" in text


@pytest.mark.parametrize("command", [("dataset", "check"), ("dataset", "show"), ("dataset", "shapes")])
def test_dataset_commands_read_the_same_way(command):
    text = _help(*command)
    assert "--out PATH" in text
    assert ("--data DATA" in text) == (command[1] != "shapes")


def test_choices_match_the_library():
    """The CLI's choice lists (kept here so that --help needs no torch) are the library's."""
    from yolo4.export.common import CALIB_METHODS as calib
    from yolo4.export.common import FORMATS as formats
    from yolo4.export.common import INT8_TOOLS as tools
    from yolo4.export.common import OUTPUT_KINDS as outputs
    from yolo4.inference.preprocess import RESIZERS

    assert (formats, outputs, calib, tuple(RESIZERS)) == (FORMATS, OUTPUT_KINDS, CALIB_METHODS, RESIZE_RULES)
    assert tools == INT8_TOOLS
    from yolo4.inference.runtime import RUNTIMES as runtimes

    assert runtimes == RUNTIMES


def test_format_has_choices(capsys):
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(["export", "--model", "m.cfg", "--weights", "w", "--format", "pb"])
    assert stop.value.code == 2 and "invalid choice: 'pb'" in capsys.readouterr().err


# ------------------------------------------------------------------ what each command passes on
def test_detect_and_val_build_one_postprocess_config_with_their_presets(api, capsys):
    _, kw, _ = _call(api, "detect", ["detect", "a.jpg", "--model", "yolov4-tiny.onnx"], capsys)
    assert kw["postprocess"] == DETECT_POSTPROCESS and kw["device"] == "auto" and kw["out"] == "runs/detect"
    _, kw, _ = _call(api, "detect", ["detect", "a.jpg", "--model", "m.onnx", "--max-det", "5", "--nms", "diou"], capsys)
    assert kw["postprocess"] == DETECT_POSTPROCESS.replace(max_det=5, nms="diou")
    _, kw, _ = _call(api, "val", ["val", "--data", "d.yaml", "--model", "m.onnx"], capsys)
    assert kw["postprocess"] == VAL_POSTPROCESS and kw["device"] == "auto" and kw["out"] == "runs/val"
    assert kw["model"] == ["m.onnx"] and kw["json_path"] is None
    _, kw, _ = _call(
        api, "val", ["val", "--data", "d", "--model", "m.onnx", "--conf", "0.3", "--labels", "best"], capsys
    )
    assert kw["postprocess"] == VAL_POSTPROCESS.replace(conf=0.3, labels="best")
    args, kw, _ = _call(api, "benchmark", ["benchmark", "--model", "yolov4-tiny", "--iou", "0.5"], capsys)
    assert args == ("yolov4-tiny", None) and kw["postprocess"] == DETECT_POSTPROCESS.replace(iou=0.5)
    assert kw["device"] == "auto"


def test_bad_postprocess_value_is_a_clear_error(api, capsys):
    assert main(["detect", "a.jpg", "--model", "m.onnx", "--conf", "1.5"]) == 2
    assert "conf 1.5 must be in [0, 1)" in capsys.readouterr().err
    assert not api["detect"].calls


def test_export_passes_one_options_object(api, capsys):
    argv = ["export", "--model", "best.cfg", "--weights", "best.weights", "--outputs", "nms", "--conf", "0.3"]
    args, kw, err = _call(api, "export", [*argv, "--img-size", "320", "256", "--format", "onnx"], capsys)
    model, weights, options = args
    assert (model, weights) == ("best.cfg", "best.weights") and not err
    assert options.outputs == "nms" and options.postprocess == DETECT_POSTPROCESS.replace(conf=0.3)
    assert options.img_size == (320, 256) and options.format == "onnx"


def test_train_passes_only_what_was_given(api, capsys):
    args, kw, _ = _call(api, "train", ["train", "--data", "d.yaml", "--epochs", "3", "--set", "lr=0.1"], capsys)
    assert args == ("d.yaml",) and kw["epochs"] == 3 and kw["options"] == ["lr=0.1"]
    assert kw["device"] == "auto" and kw["model"] is None and kw["batch"] is None and kw["demo"] is False


def test_train_takes_a_config_file(api, capsys):
    args, kw, _ = _call(api, "train", ["train", "--config", "runs/tune/best.yaml", "--epochs", "50"], capsys)
    assert args == (None,) and kw["config"] == "runs/tune/best.yaml" and kw["epochs"] == 50


def test_tune_passes_only_what_was_given(api, capsys):
    argv = ["tune", "--data", "d.yaml", "--model", "yolov4-tiny", "--trials", "12", "--epochs-per-trial", "5"]
    argv += ["--time-budget", "90", "--space", "s.yaml", "--img-size", "256", "--set", "mosaic=0.5", "--no-prune"]
    args, kw, _ = _call(api, "tune", argv, capsys)
    assert args == ("d.yaml",) and kw["options"] == ["mosaic=0.5"] and kw["config"] is None
    assert (kw["trials"], kw["epochs_per_trial"], kw["budget_min"], kw["space"], kw["img_size"]) == (
        12,
        5,
        90.0,
        "s.yaml",
        256,
    )
    assert kw["prune"] is False and kw["backend"] is None and kw["batch"] is None and kw["device"] == "auto"
    _, kw, _ = _call(api, "tune", ["tune", "--data", "d", "--backend", "local", "--config", "base.yaml"], capsys)
    assert kw["prune"] is None and kw["backend"] == "local" and kw["config"] == "base.yaml"


def test_train_demo_refuses_options_it_would_ignore(capsys):
    """The real run_train: it refuses before any work, naming each ignored option."""
    assert main(["train", "--demo", "--data", "d.yaml", "--epochs", "3", "--set", "lr=0.1", "--out", "o"]) == 2
    err = capsys.readouterr().err
    assert "train --demo" in err and "--data, --set, --epochs" in err and "--out, --device and --time-budget" in err


def test_train_demo_takes_out_device_and_its_budget(monkeypatch):
    import yolo4.training.demo

    rec = _Record({})
    monkeypatch.setattr(yolo4.training.demo, "run_demo", rec)
    assert main(["train", "--demo", "--out", "runs/x", "--device", "cpu"]) == 0
    assert main(["train", "--demo", "--time-budget", "30"]) == 0
    assert rec.calls == [
        (("runs/x",), {"device": "cpu", "minutes": None}),
        (("runs/demo",), {"device": "auto", "minutes": 30.0}),
    ]


def test_train_takes_a_time_budget(api, capsys):
    _, kw, _ = _call(api, "train", ["train", "--data", "d", "--time-budget", "20"], capsys)
    assert kw["time_budget_min"] == 20.0


# ------------------------------------------------------------------ old spellings
# (old argv, new argv, api function, the new spelling the warning must name)
OLD_SPELLINGS = [
    (["detect", "a.jpg", "--cfg", "m.cfg", "--weights", "w"], ["detect", "a.jpg", "--model", "m.cfg", "--weights", "w"],
     "detect", "use --model"),
    (["detect", "a.jpg", "--model", "m", "--save-dir", "o"], ["detect", "a.jpg", "--model", "m", "--out", "o"],
     "detect", "use --out"),
    (["detect", "a.jpg", "--weights", "m.onnx"], ["detect", "a.jpg", "--model", "m.onnx"],
     "detect", "use --model m.onnx"),
    (["detect", "a.jpg", "--cfg", "m.cfg", "--weights", "m.tflite"], ["detect", "a.jpg", "--model", "m.tflite"],
     "detect", "use --model m.tflite"),
    (["val", "--data", "d", "--cfg", "m.cfg", "--weights", "w"], ["val", "--data", "d", "--model", "m.cfg", "--weights", "w"],
     "val", "use --model"),
    (["val", "--data", "d", "--model", "m.onnx", "--save-dir", "o"], ["val", "--data", "d", "--model", "m.onnx", "--out", "o"],
     "val", "use --out"),
    (["val", "--data", "d", "--model", "m.onnx", "--save-json", "p.json"],
     ["val", "--data", "d", "--model", "m.onnx", "--json", "p.json"], "val", "use --json"),
    (["val", "--data", "d", "--cfg", "m.cfg", "--weights", "w", "m.onnx"],
     ["val", "--data", "d", "--model", "m.cfg", "m.onnx", "--weights", "w"], "val", "use --model m.onnx"),
    (["train", "--data", "d", "--cfg", "m.cfg"], ["train", "--data", "d", "--model", "m.cfg"], "train", "use --model"),
    (["export", "--cfg", "m.cfg", "--weights", "w"], ["export", "--model", "m.cfg", "--weights", "w"],
     "export", "use --model"),
    (["export", "--model", "m", "--weights", "w", "--decode"], ["export", "--model", "m", "--weights", "w", "--outputs", "decoded"],
     "export", "use --outputs decoded"),
    (["export", "--model", "m", "--weights", "w", "--nms"], ["export", "--model", "m", "--weights", "w", "--outputs", "nms"],
     "export", "use --outputs nms"),
    (["info", "yolov4"], ["info", "--model", "yolov4"], "info", "use 'yolo4 info --model MODEL'"),
    (["benchmark", "yolov4-tiny"], ["benchmark", "--model", "yolov4-tiny"], "benchmark",
     "use 'yolo4 benchmark --model MODEL'"),
]  # fmt: skip


def _same(call_a, call_b) -> bool:
    """Equal api calls; ExportOptions compare by value."""
    return repr(call_a) == repr(call_b)


@pytest.mark.parametrize("old, new, name, hint", OLD_SPELLINGS, ids=[" ".join(o[0]) for o in OLD_SPELLINGS])
def test_old_spelling_does_what_the_new_one_does_and_says_so(api, capsys, old, new, name, hint):
    args_old, kw_old, err_old = _call(api, name, old, capsys)
    args_new, kw_new, err_new = _call(api, name, new, capsys)
    assert _same((args_old, kw_old), (args_new, kw_new))
    assert "is deprecated and will be removed in the next release" in err_old and hint in err_old, err_old
    assert "deprecated" not in err_new


def test_export_nms_with_a_kind_is_the_nms_kind_not_the_old_switch(api, capsys):
    (_, _, options), _, err = _call(
        api, "export", ["export", "--model", "m", "--weights", "w", "--nms", "greedy"], capsys
    )
    assert options.outputs == "heads" and options.postprocess.nms == "greedy" and not err


@pytest.mark.parametrize(
    "old, new, hint",
    [
        (["dataset", "check", "D"], ["dataset", "check", "--data", "D"], "'yolo4 dataset check --data DATA'"),
        (["dataset", "check", "--data", "D", "--plot", "c.png"], ["dataset", "check", "--data", "D", "--out", "c.png"], "use --out"),
        (["dataset", "show", "D", "--out", "g.png"], ["dataset", "show", "--data", "D", "--out", "g.png"],
         "'yolo4 dataset show --data DATA'"),
        (["dataset", "shapes", "S"], ["dataset", "shapes", "--out", "S"], "'yolo4 dataset shapes --out PATH'"),
    ],
)  # fmt: skip
def test_old_dataset_spellings(monkeypatch, capsys, old, new, hint):
    import yolo4.data.report
    import yolo4.data.shapes

    rec = _Record(0)
    for module, name in ((yolo4.data.report, "check_dataset"), (yolo4.data.report, "show_dataset")):
        monkeypatch.setattr(module, name, rec)
    monkeypatch.setattr(yolo4.data.shapes, "make_shapes_from_args", rec)
    assert main(old) == 0
    err_old = capsys.readouterr().err
    assert main(new) == 0
    err_new = capsys.readouterr().err
    assert len(rec.calls) == 2 and _same(rec.calls[0], rec.calls[1])
    assert "deprecated" in err_old and hint in err_old and "deprecated" not in err_new


@pytest.mark.parametrize(
    "argv, message",
    [
        (["detect", "a.jpg", "--cfg", "a.cfg", "--model", "b.cfg"], "argument --model: not allowed with argument --cfg"),
        (["detect", "a.jpg", "--out", "o", "--save-dir", "p"], "argument --save-dir: not allowed with argument --out"),
        (["val", "--data", "d", "--json", "a", "--save-json", "b"], "argument --save-json: not allowed with argument --json"),
        (["export", "--model", "m", "--weights", "w", "--outputs", "nms", "--decode"], "argument --decode: not allowed"),
        (["info", "yolov4", "--model", "yolov4"], "MODEL given twice: as --model and as a positional argument"),
        (["dataset", "shapes", "S", "--out", "T"], "PATH given twice: as --out and as a positional argument"),
        (["detect", "a.jpg", "--model", "m.onnx", "--weights", "n.onnx"], "give the exported file as --model only"),
    ],
)  # fmt: skip
def test_old_and_new_spelling_together_are_refused(api, capsys, argv, message):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err
    assert not any(rec.calls for rec in api.values())


@pytest.mark.parametrize("argv", [["info"], ["benchmark"], ["dataset", "check"], ["dataset", "shapes"]])
def test_a_missing_model_data_or_out_is_named(api, capsys, argv):
    with pytest.raises(SystemExit):
        main(argv)
    assert "the following arguments are required: --" in capsys.readouterr().err


# ------------------------------------------------------------------ tiles, Ray, tracking
def test_tiles_reach_detect_and_val_as_one_tile_config(api, capsys):
    from yolo4.inference.tiles import TileConfig

    _, kw, _ = _call(api, "detect", ["detect", "a.jpg", "--model", "m.onnx"], capsys)
    assert kw["tile"] is None and kw["pipeline"] is True
    argv = ["detect", "big.jpg", "--model", "m.onnx", "--tile", "416", "--tile-overlap", "0.3", "--no-pipeline"]
    _, kw, _ = _call(api, "detect", argv, capsys)
    assert kw["tile"] == TileConfig(size=416, overlap=0.3) and kw["pipeline"] is False
    argv = ["val", "--data", "d", "--model", "m.onnx", "--tile", "320", "--no-full-image", "--tile-merge", "nms"]
    _, kw, _ = _call(api, "val", argv, capsys)
    assert kw["tile"] == TileConfig(size=320, full_image=False, merge="nms")
    assert main(["detect", "a.jpg", "--model", "m.onnx", "--tile", "8"]) == 2  # a clear error, not a traceback
    assert "tile size 8" in capsys.readouterr().err


def test_ray_flag_runs_detect_dataset_with_its_settings(api, capsys):
    from yolo4.inference.cluster import RayConfig

    argv = ["detect", "imgs/", "--model", "m.onnx", "--ray", "--ray-address", "auto", "--ray-workers", "4"]
    args, kw, _ = _call(api, "detect_dataset", argv + ["--shard-size", "500", "--out", "results"], capsys)
    assert args == (["imgs/"],) and kw["out"] == "results" and kw["postprocess"] == DETECT_POSTPROCESS
    assert kw["ray_config"] == RayConfig(address="auto", workers=4, shard_size=500, batch=1)
    assert api["detect"].calls == []


def test_track_passes_its_bytetrack_settings(api, capsys):
    from yolo4.inference.track import TrackConfig
    from yolo4.ops.nms_config import TRACK_POSTPROCESS

    args, kw, _ = _call(api, "track", ["track", "clip.mp4", "--model", "m.onnx", "--track-buffer", "60"], capsys)
    assert args == ("clip.mp4",) and kw["config"] == TrackConfig(track_buffer=60)
    assert kw["postprocess"] == TRACK_POSTPROCESS and kw["out"] == "runs/track" and kw["device"] == "auto"


@pytest.mark.parametrize(
    "name, argv",
    [
        ("detect", ["detect", "a.jpg"]),
        ("detect_dataset", ["detect", "imgs/", "--ray"]),
        ("val", ["val", "--data", "d"]),
        ("benchmark", ["benchmark"]),
        ("track", ["track", "clip.mp4"]),
    ],
)
def test_every_command_that_runs_the_network_takes_the_speed_flags(api, capsys, name, argv):
    from yolo4.inference.speed import EAGER, FAST_CPU

    argv = [*argv, "--model", "yolov4-tiny", "--device", "cpu"]
    _, kw, _ = _call(api, name, argv, capsys)
    assert kw["speed"] is None  # without a flag: the device's default (FAST_CPU here)
    _, kw, _ = _call(api, name, [*argv, "--eager", "--compile"], capsys)
    assert kw["speed"] == EAGER.replace(compile="default")
    _, kw, _ = _call(api, name, [*argv, "--half", "--no-fuse"], capsys)
    assert kw["speed"] == FAST_CPU.replace(precision="bf16", fold_bn=False)  # --half on a CPU: bf16


@pytest.mark.parametrize("command", ["detect", "val", "benchmark"])
def test_runtime_reaches_the_api(api, command, capsys):
    """--runtime (default auto) is handed to detect, val and benchmark; an unknown one is refused."""
    argv = {"detect": ["detect", "a.jpg"], "val": ["val", "--data", "d"], "benchmark": ["benchmark"]}[command]
    _, kwargs, _ = _call(api, command, [*argv, "--model", "m.onnx", "--runtime", "openvino"], capsys)
    assert kwargs["runtime"] == "openvino"
    _, kwargs, _ = _call(api, command, [*argv, "--model", "m.onnx"], capsys)
    assert kwargs["runtime"] == "auto"
    with pytest.raises(SystemExit):
        main([*argv, "--model", "m.onnx", "--runtime", "tensorrt"])
    assert "invalid choice: 'tensorrt'" in capsys.readouterr().err
