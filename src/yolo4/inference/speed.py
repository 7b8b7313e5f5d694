"""The speed settings of the network (`SpeedConfig`): what `yolo4.inference.fastpath` does with
a module, chosen once and passed down unchanged by `yolo4 detect`, `val` and `benchmark`
(`--half`, `--compile MODE`, `--no-fuse`, `--eager`). No torch here, so the command line reads
the choices without importing it. See `yolo4.inference.fastpath` for what each field does.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from yolo4.errors import Yolo4Error

COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def _device_type(device: object) -> str:
    """ "cuda" for torch.device("cuda:1") or "cuda:1", "cpu" for "cpu", ..."""
    return str(getattr(device, "type", device)).split(":")[0]


PRECISION_NAMES = ("fp32", "fp16", "bf16")  # torch.float32, float16, bfloat16 (fastpath.PRECISIONS)


@dataclass(frozen=True)
class SpeedConfig:
    """How the network runs (see the module docstring). Invalid values raise Yolo4Error."""

    precision: str = "fp32"
    fold_bn: bool = False
    channels_last: bool = False
    compile: str = "off"
    async_upload: bool = False
    batched_nms: bool = False

    def __post_init__(self) -> None:
        problems = []
        if self.precision not in PRECISION_NAMES:
            problems.append(f"precision '{self.precision}' is not one of {', '.join(PRECISION_NAMES)}")
        if self.compile not in COMPILE_MODES:
            problems.append(f"compile mode '{self.compile}' is not one of {', '.join(COMPILE_MODES)}")
        if problems:
            raise Yolo4Error("speed settings: " + "; ".join(problems))

    def replace(self, **changes: str | bool) -> SpeedConfig:
        """A copy with `changes` applied (validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @staticmethod
    def for_device(device: object) -> SpeedConfig:
        """The default of every command: FAST_CUDA on a CUDA device (a torch.device or its name),
        FAST_CPU on the CPU, EAGER elsewhere."""
        kind = _device_type(device)
        return FAST_CUDA if kind == "cuda" else FAST_CPU if kind == "cpu" else EAGER

    def on(self, device: object) -> SpeedConfig:
        """These settings as they apply on `device` (a torch.device or its name): fp16 and async
        upload are CUDA-only (fp16 on a CPU is refused: it is slower there than fp32), bf16 runs
        anywhere (`FastNetwork` refuses it on a CPU without native bf16, where it is 3-5x slower)."""
        if _device_type(device) == "cuda":
            return self
        if self.precision == "fp16":
            raise Yolo4Error("fp16 needs a CUDA device; on a CPU use fp32, or bf16 (--half) on CPUs with native bf16")
        return self.replace(async_upload=False)

    def with_flags(
        self, half: bool = False, compile: str | None = None, fuse: bool = True, device: object = "cuda"
    ) -> SpeedConfig:
        """These settings changed by the command line's `--half` (the device's half precision:
        fp16 on CUDA, bf16 on a CPU), `--compile MODE` and `--no-fuse`."""
        return self.replace(
            precision=("fp16" if _device_type(device) == "cuda" else "bf16") if half else self.precision,
            compile=compile or self.compile,
            fold_bn=self.fold_bn and fuse,
        )

    def describe(self) -> str:
        """One line for logs: `fp16, BN folded, channels_last, compiled (reduce-overhead), ...`."""
        parts = [self.precision]
        parts += ["BN folded"] if self.fold_bn else []
        parts += ["channels_last"] if self.channels_last else []
        parts += [f"compiled ({self.compile})"] if self.compile != "off" else ["eager"]
        parts += ["async upload"] if self.async_upload else []
        parts += ["batched NMS"] if self.batched_nms else []
        return ", ".join(parts)


EAGER = SpeedConfig()  # the module as it is: fp32, NCHW, eager, NMS image by image
FAST_CUDA = SpeedConfig("fp16", True, True, "reduce-overhead", True, True)
# the CPU's default changes nothing a user can see: BatchNorm folded and NHWC give the same float32
# heads (within 2e-6 of their scale) 1.2-1.9x faster (benchmarks/bench_cpu.py); bf16 and compiling
# are faster still but are asked for (--half: mAP50 within about half a point; --compile: a first call of 10-20 s)
FAST_CPU = SpeedConfig("fp32", True, True)
