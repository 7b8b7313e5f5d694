"""`yolo4 info`: darknet's totals, the rule-of-thumb FPS and the layer table."""

from __future__ import annotations

import pytest

from yolo4.cli import main
from yolo4.darknet.layers import Convolutional, NetOptions, NetworkSpec
from yolo4.models import blocks, build, format_info, model_info, predicted_fps


def test_predicted_fps_is_darknets_rule_of_thumb():
    assert predicted_fps(128.459, 14.0) == pytest.approx(0.4 * 14e12 / 128.459e9)
    assert predicted_fps(10.0, 100.0) == pytest.approx(4000.0)
    assert predicted_fps(10.0, 100.0, efficiency=1.0) == pytest.approx(10000.0)
    assert predicted_fps(0.0, 14.0) == float("inf")


def test_model_info_counts_by_hand():
    layers = [
        blocks.conv(8, 3, 1, "leaky"),
        blocks.maxpool(2, 2),
        Convolutional(filters=4, size=1, stride=1, pad=1, batch_normalize=0, activation="linear"),
    ]  # bias
    info = model_info(NetworkSpec(NetOptions(width=8, height=8), layers))
    conv1 = 2 * (3 * 8 * 3 * 3) * 8 * 8  # 2 x MACs
    pool = 2 * 2 * 8 * 4 * 4  # darknet counts k*k*C*H_out*W_out
    conv2 = 2 * (8 * 4) * 4 * 4
    assert info.bflops == pytest.approx((conv1 + pool + conv2) / 1e9)
    assert info.params == (3 * 8 * 9 + 2 * 8) + (8 * 4 + 4)
    assert info.input_chw == (3, 8, 8) and info.num_classes == 0


def test_format_info_has_one_row_per_layer_and_the_totals():
    spec = build("yolov4-tiny")
    text = format_info(spec, peak_tflops=10.0)
    lines = text.splitlines()
    assert lines[0].startswith("zoo:yolov4-tiny: 38 layers, input 416 x 416 x 3, 80 classes, 2 [yolo] heads")
    rows = lines[2:-3]
    assert [int(r.split()[0]) for r in rows] == list(range(38))
    assert rows[0].split()[:9] == ["0", "conv", "32", "3", "x", "3/", "2", "416", "x"]
    assert "0.075" in rows[0] and "208 x 208 x   32" in rows[0]
    assert "layers 2 (group 1 of 2)" in rows[3]
    assert rows[9].split()[1] == "max" and "mask 1,2,3, 80 classes, scale_x_y 1.05" in rows[37]
    assert lines[-3:] == [
        "Total BFLOPS 6.910",
        "Trainable params 6,056,606 (6.057 M)",
        f"Predicted FPS {0.4 * 10e12 / (model_info(spec).bflops * 1e9):.1f} at 10 peak TFLOPS "
        "(darknet's rule of thumb: 40% of peak)",
    ]


@pytest.mark.parametrize(
    "argv,bflops,params",
    [
        (["--model", "yolov4"], "128.459", "64,363,101"),
        (["--model", "yolov4", "--img-size", "416"], "60.137", "64,363,101"),
        (["--model", "yolov4-tiny"], "6.910", "6,056,606"),
        (["--model", "yolov4-csp"], "77.003", "52,921,437"),
        (["--model", "yolov4-csp", "--img-size", "640"], "120.317", "52,921,437"),
        (["--model", "yolov4x-mish"], "221.986", "99,751,053"),
        (["--model", "yolov3"], "65.879", "61,949,149 (61.949 M)"),
        (["--model", "yolov3-tiny"], "5.571", "8,852,366 (8.852 M)"),
    ],
)
def test_cli_info_prints_the_readme_figures(capsys, argv, bflops, params):
    assert main(["info", *argv]) == 0
    out = capsys.readouterr().out
    assert f"\nTotal BFLOPS {bflops}\n" in out
    assert f"\nTrainable params {params}" in out


def test_cli_info_on_a_cfg_path_with_overrides(capsys, tmp_path):
    from yolo4.darknet import write_cfg
    from yolo4.models.zoo import build

    cfgs = {name: write_cfg(build(name), tmp_path / f"{name}.cfg") for name in ("yolov4", "yolov4-tiny")}
    assert main(["info", "--model", str(cfgs["yolov4"]), "--peak-tflops", "100"]) == 0
    out = capsys.readouterr().out
    assert "Total BFLOPS 128.459" in out and "Trainable params 64,363,101" in out
    assert f"Predicted FPS {0.4 * 100e12 / 128.459e9:.1f} at 100 peak TFLOPS" in out
    assert main(["info", "--model", str(cfgs["yolov4-tiny"]), "--classes", "3", "--img-size", "320"]) == 0
    out = capsys.readouterr().out
    assert "input 320 x 320 x 3, 3 classes" in out
    head_conv = next(line for line in out.splitlines() if line.split()[0] == "29")
    assert head_conv.split()[1:3] == ["conv", "24"] and "10 x  10 x   24" in head_conv


def test_cli_info_unknown_model(capsys):
    assert main(["info", "--model", "yolov9"]) == 2
    err = capsys.readouterr().err
    assert "yolov9" in err and "yolov4-csp-leaky" in err
