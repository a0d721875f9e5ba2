"""The layers of the house hold (issue 15, item 5): the import contract (import-linter, as CI runs it), no
imports of another module's private names, and torch's private APIs only behind bnlab._compat."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import bnlab
from bnlab import _compat

ROOT = Path(__file__).resolve().parents[2]
# the package as imported (src/bnlab here; a planted copy when tests/mutation/run.py puts one first)
SRC = Path(bnlab.__file__).resolve().parent

# Imports of another module's private name that remain in files other helpers own: each is a follow-up there.
# A new one fails test_no_module_imports_another_modules_private_names.
PRIVATE_NAME_FOLLOW_UPS: set[tuple[str, str, str]] = set()  # none left
# torch's private APIs used outside bnlab/_compat.py in files other helpers own (follow-ups there).
TORCH_PRIVATE_FOLLOW_UPS: set[str] = set()  # every use is behind bnlab/_compat.py
TORCH_PRIVATE = ("torch._C", "torch._functorch", "torch._dynamo", "torch._inductor", "torch._subclasses",
                 "torch.nn.modules.batchnorm._", "distributed_c10d._",
                 "_DEFAULT_OP_LIST", "_ConvTransposeNd")  # fmt: skip


def _lint_imports(cwd: Path, src: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports")
    if exe is None:
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run([exe, "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_import_contract_holds():
    """`lint-imports` (the CI step) keeps the layers contract of .importlinter."""
    result = _lint_imports(ROOT, SRC.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_import_contract_catches_a_layer_importing_a_tool(tmp_path):
    """A planted upward import (a layer importing a tool) breaks the contract: the check can fail."""
    shutil.copytree(SRC, tmp_path / "src" / "bnlab", ignore=shutil.ignore_patterns("__pycache__", "*.npz"))
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    planted = tmp_path / "src" / "bnlab" / "distributed.py"
    planted.write_text(planted.read_text() + "\nfrom .inference import fold as _planted  # noqa\n")
    result = _lint_imports(tmp_path, tmp_path / "src")
    assert result.returncode != 0
    assert "bnlab.distributed is not allowed to import bnlab.inference" in result.stdout


def _modules():
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).as_posix()
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        package = parts if path.name == "__init__.py" else parts[:-1]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield rel, ".".join(parts), ".".join(package), ast.parse(path.read_text(), rel)


def _resolve(node: ast.ImportFrom, package: str) -> str:
    if not node.level:
        return node.module or ""
    base = package.split(".")
    base = base[: len(base) - node.level + 1]
    return ".".join([*base, *([node.module] if node.module else [])])


def test_no_module_imports_another_modules_private_names():
    """`from bnlab.x import _name` across modules: shared things get public names (old ones kept as aliases)."""
    found = set()
    for rel, name, package, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                source = _resolve(node, package)
                if not source.startswith("bnlab") or source == name:
                    continue
                for alias in node.names:
                    submodule = SRC.parent.joinpath(*source.split("."), alias.name)
                    if submodule.with_suffix(".py").exists() or submodule.is_dir():
                        continue  # a module (bnlab._compat is meant to be imported), not a private name
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        found.add((rel, source, alias.name))
    assert found <= PRIVATE_NAME_FOLLOW_UPS, sorted(found - PRIVATE_NAME_FOLLOW_UPS)


def test_torch_private_apis_only_behind_compat():
    """torch._C, torch._functorch, ... appear (as imports or attributes) only in bnlab/_compat.py."""
    found = set()
    for rel, _, _, tree in _modules():
        if rel == "bnlab/_compat.py":
            continue
        for node in ast.walk(tree):
            text = None
            if isinstance(node, ast.Attribute):
                text = ast.unparse(node)
            elif isinstance(node, ast.ImportFrom) and node.module:
                text = node.module + "." + ".".join(a.name for a in node.names)
            elif isinstance(node, ast.Import):
                text = " ".join(a.name for a in node.names)
            if text and any(p in text for p in TORCH_PRIVATE):
                found.add(rel)
    assert found <= TORCH_PRIVATE_FOLLOW_UPS, sorted(found - TORCH_PRIVATE_FOLLOW_UPS)


def test_compat_finds_every_private_api_of_this_torch():
    """Fails loudly when a torch release moves one of the private APIs bnlab uses (named in the message)."""
    missing = _compat.check()
    assert not missing, "torch moved private APIs that bnlab/_compat.py uses: " + "; ".join(missing)
    assert _compat.functorch_transforms_active() is False
    assert _compat.torch_dispatch_mode_active() is False
    assert _compat.torch_function_mode_enabled() is False
    import torch

    seen = []
    torch.vmap(lambda t: seen.append((_compat.functorch_transforms_active(), _compat.only_vmap_active())) or t)(
        torch.zeros(2, 1)
    )
    assert seen == [(True, True)]
    assert issubclass(torch.nn.BatchNorm2d, _compat.TorchBatchNormBase)


def test_compat_check_names_a_moved_api(monkeypatch):
    """check() reports a name this torch lacks (as a release that moved it would), instead of passing."""
    monkeypatch.setattr(_compat, "PRIVATE_APIS", (*_compat.PRIVATE_APIS, ("torch._C", "_bnlab_not_there")))
    missing = _compat.check()
    assert len(missing) == 1 and "torch._C._bnlab_not_there" in missing[0]


def test_layers_module_surgery_moved_to_nn():
    """replace_module/adopt_state live in bnlab.nn.surgery (layers); the tools' old import paths still work."""
    import importlib

    from bnlab.nn import surgery

    _layers, convert, freeze, layers = (
        importlib.import_module(f"bnlab.inference.{m}") for m in ("_layers", "convert", "freeze", "layers")
    )

    assert convert.adopt_state is surgery.adopt_state
    assert layers.replace_module is surgery.replace_module is _layers.replace_module
    assert freeze._SAVED_GRAD == surgery.SAVED_GRAD


def test_cli_import_does_not_pull_torch_for_explain():
    """`bnlab explain` text stays torch-free (the new import paths added no torch import to it)."""
    code = "import sys, bnlab.explain; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(SRC.parent)})  # fmt: skip
    assert out.stdout.strip() == "False", out.stderr


def _import_graph() -> dict[str, set[str]]:
    """bnlab module -> the bnlab modules it imports, lazy imports inside functions included."""
    modules = {name for _, name, _, _ in _modules()}
    graph: dict[str, set[str]] = {}
    for _, name, package, tree in _modules():
        deps = graph.setdefault(name, set())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                source = _resolve(node, package)
                targets = [f"{source}.{a.name}" for a in node.names] + [source]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for target in targets:
                if target in modules and target != name:
                    deps.add(target)
                    break  # the most specific module named: `from . import x` is x, not the package
    return graph


def test_no_import_cycles_even_through_lazy_imports():
    """No module reaches itself through bnlab's own imports (a package's __init__ re-exporting its own
    submodules is the one allowed shape: the submodule does not import the package back)."""
    graph = _import_graph()
    cycles = []
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycle = path[path.index(dep):] + [dep]
                if not all(c == dep or c.startswith(dep + ".") or dep.startswith(c + ".") for c in cycle):
                    cycles.append(" -> ".join(cycle))
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, cycles
