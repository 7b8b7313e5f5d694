"""Hostile files cannot run code: no source file under src/, benchmarks/ or examples/ reads
user files in a way that can execute them. Checked on the syntax tree, not by regex:

  * every `torch.load` passes `weights_only=True` (no `torch.jit.load`: TorchScript is code);
  * YAML is read with `yaml.safe_load` (no `yaml.load`, `full_load`, `unsafe_load`);
  * no `eval`, `exec`, `compile`; `__import__` and `importlib.import_module` only of a literal
    name or of one inside the package (`f"yolo4.{name}"`), never of a name from outside;
  * no pickle in any form: `pickle`, `cPickle`, `dill`, `cloudpickle`, `joblib`, `marshal`,
    `shelve` are not imported, `np.load` never gets `allow_pickle=True`, no `pd.read_pickle`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("src", "benchmarks", "examples")
PICKLERS = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"}
CODE_BUILTINS = {"eval", "exec", "compile"}


def _dotted(node: ast.AST) -> str:
    """`torch.jit.load` for the expression torch.jit.load; '' for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def _known_module(call: ast.Call) -> bool:
    """import_module("yolo4.api"), __import__("onnx") or import_module(f"yolo4.{name}"): a module
    named in the code, or one of this package."""
    if not call.args:
        return False
    arg = call.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return True
    if isinstance(arg, ast.JoinedStr) and arg.values:
        head = arg.values[0]
        return isinstance(head, ast.Constant) and str(head.value).startswith("yolo4.")
    return False


def _true(call: ast.Call, keyword: str) -> bool:
    return any(k.arg == keyword and isinstance(k.value, ast.Constant) and k.value.value is True for k in call.keywords)


def violations(source: str, name: str = "<text>") -> list[str]:
    """Every construct of the module docstring found in `source`, as 'name:line: what'."""
    out = []
    for node in ast.walk(ast.parse(source, name)):
        where = f"{name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            out += [f"{where}: imports {a.name}" for a in node.names if a.name.split(".")[0] in PICKLERS]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PICKLERS:
            out.append(f"{where}: imports from {node.module}")
        elif isinstance(node, ast.Call):
            func = _dotted(node.func)
            last = func.rsplit(".", 1)[-1]
            if isinstance(node.func, ast.Name) and func in CODE_BUILTINS:
                out.append(f"{where}: calls {func}()")
            elif func in ("importlib.import_module", "import_module", "__import__") and not _known_module(node):
                out.append(f"{where}: imports a module named at run time")
            elif func.endswith("jit.load"):
                out.append(f"{where}: {func} loads TorchScript code")
            elif func == "torch.load" and not _true(node, "weights_only"):
                out.append(f"{where}: torch.load without weights_only=True")
            elif func.startswith("yaml.") and last in ("load", "load_all", "full_load", "full_load_all", "unsafe_load"):
                out.append(f"{where}: {func} (use yaml.safe_load)")
            elif last == "load" and func.split(".")[0] in ("np", "numpy") and _true(node, "allow_pickle"):
                out.append(f"{where}: {func} with allow_pickle=True")
            elif last == "read_pickle":
                out.append(f"{where}: {func} unpickles")
    return out


def test_the_checker_finds_each_construct():
    bad = """
import pickle
from dill import loads
import yaml, torch, numpy as np, importlib
torch.load(p)
torch.load(p, weights_only=False)
torch.jit.load(p)
yaml.load(text, Loader=yaml.Loader)
yaml.unsafe_load(text)
eval(text)
exec(text)
__import__(name)
importlib.import_module(name)
importlib.import_module(f"{user}.x")
np.load(p, allow_pickle=True)
pd.read_pickle(p)
"""
    found = violations(bad)
    assert len(found) == 14, "\n".join(found)
    good = """
import yaml, torch, numpy as np
torch.load(p, map_location="cpu", weights_only=True)
yaml.safe_load(text)
model.eval()
np.load(p, allow_pickle=False)
np.load(p)
importlib.import_module("yolo4.api")
importlib.import_module(f"yolo4.{name}")
__import__("ultralytics").__version__
"""
    assert violations(good) == []


@pytest.mark.parametrize("folder", SCANNED)
def test_no_source_file_can_run_code_from_a_file(folder):
    files = sorted((ROOT / folder).rglob("*.py"))
    if folder == "src":
        assert len(files) > 40  # the package really is scanned
    found = [v for f in files for v in violations(f.read_text(encoding="utf-8"), str(f.relative_to(ROOT)))]
    assert not found, "\n".join(found)
