"""The runtime is the ground floor: the source folder ``cpllm_plugin/`` (the package and
``model/``) imports nothing from the integrations, training or export, which build on it.

Imports are read with ``ast``, so lazy imports inside functions count as much as top-level
ones, and so does a module named in a string (``sys.modules.get("cpllm_plugin.export")``,
``importlib.import_module``).
"""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UPPER = ("cpllm_plugin.integrations", "cpllm_plugin.training", "cpllm_plugin.export")
# Known and still to be moved; each entry is (file, the upper module it reaches).
PENDING: set[tuple[str, str]] = set()


def _upper(name: str) -> bool:
    return any(name == u or name.startswith(u + ".") for u in UPPER)


def upward(source: str, package: str) -> list[tuple[int, str]]:
    """``(line, module)`` of every import in ``source`` (a module of ``package``) that
    reaches an upper layer, and of every string naming one."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                head = parts[:len(parts) - node.level + 1]
                base = ".".join(head + ([node.module] if node.module else []))
            # ``from cpllm_plugin import export`` reaches it through the imported name.
            names = [base, *(f"{base}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names = [node.value]
        else:
            continue
        hit = next((n for n in names if _upper(n)), None)
        if hit is not None:
            found.append((node.lineno, hit))
    return found


def runtime_files() -> list[Path]:
    return sorted((ROOT / "cpllm_plugin").rglob("*.py"))


def test_runtime_imports_no_upper_layer():
    files = runtime_files()
    assert {"cli.py", "api.py", "cpllm.py"} <= {p.name for p in files}
    found = {}
    for path in files:
        rel = path.relative_to(ROOT)
        package = ".".join(rel.parent.parts)
        for line, name in upward(path.read_text("utf-8"), package):
            found.setdefault((rel.as_posix(), name), []).append(line)
    new = {k: v for k, v in found.items() if k not in PENDING}
    assert not new, "the runtime imports an upper layer: " + "; ".join(
        f"{f} line {lines} -> {name}" for (f, name), lines in sorted(new.items()))
    fixed = PENDING - found.keys()
    assert not fixed, f"no longer imported, remove from PENDING: {sorted(fixed)}"


def test_checker_catches_every_form():
    # Each line 1-9 reaches an upper layer from cpllm_plugin/x.py; the rest do not.
    src = """import cpllm_plugin.integrations.ladder
from cpllm_plugin.training import train
from cpllm_plugin import export
from .integrations import ffmpeg
from . import training
def lazy():
    from .export.trt import build_engine
    import sys
    return sys.modules.get("cpllm_plugin.integrations.ffmpeg")
from . import api
from .model import io
import cpllm_plugin.errors
doc = "cpllm_plugin.integrationsX, or :mod:`cpllm_plugin.export` in a docstring"
"""
    got = upward(src, "cpllm_plugin")
    assert sorted(line for line, _ in got) == [1, 2, 3, 4, 5, 7, 9], got
    assert dict(got)[4] == "cpllm_plugin.integrations"
    # From cpllm_plugin/model/, ``..`` is the package: ``.integrations`` would be model's own.
    model = "from ..integrations import ladder\nfrom .integrations import x\nfrom .. import api\n"
    assert upward(model, "cpllm_plugin.model") == [(1, "cpllm_plugin.integrations")]


def test_cli_import_loads_no_upper_layer():
    code = ("import sys, cpllm_plugin, cpllm_plugin.cli; "
            f"print([m for m in sys.modules if m.startswith({UPPER!r})])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
