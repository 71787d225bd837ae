"""The package's layers import only the layers below them: engine (models, caches, the sampling rule, decoding)
< runs (configs, plans, the runner) < analysis (statistics of raw rows) < report (the write-up) < the CLI. The
shared vocabulary (errors, offline files, catalogue, tasks, provenance) sits under all of them. A static scan of
every `import` statement, lazy ones inside functions included; a synthetic module shows the scan can fail."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "reproduce"

# rank of each top-level part of the package: a module may import its own part and parts of lower rank
RANKS = {"errors": 0, "offline": 0, "catalogue": 0, "tasks": 0, "provenance": 0,
         "engine": 1, "distill": 2, "runs": 2, "analysis": 3, "report": 4, "cli": 5, "__main__": 6}


def _part(module: str) -> str | None:
    """'reproduce.runs.plan' -> 'runs'; None for a module outside the package (or the package itself)."""
    names = module.split(".")
    return names[1] if names[0] == "reproduce" and len(names) > 1 else None


def imported_parts(source: str) -> set[str]:
    """The package's parts a module's source imports (`from reproduce import tasks` counts as tasks)."""
    parts = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            parts |= {_part(alias.name) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            parts.add("a relative import")  # the package imports absolutely; a relative one would dodge the scan
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "reproduce":
                parts |= {alias.name for alias in node.names}
            else:
                parts.add(_part(node.module))
    return parts - {None, "__init__"}


def violations(part: str, source: str) -> list[str]:
    """The imports of a module in `part` that reach a layer at or above its own (its own part is fine)."""
    return sorted(other for other in imported_parts(source)
                  if other != part and RANKS.get(other, 99) >= RANKS[part] and RANKS[part] > 0)


def test_every_module_imports_only_the_layers_below_it():
    found, scanned = {}, 0
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        part = relative.parts[0].removesuffix(".py")
        if part == "__init__":
            continue
        assert part in RANKS, f"{relative}: a new part of the package needs a rank in RANKS"
        bad = violations(part, path.read_text())
        scanned += 1
        if bad:
            found[str(relative)] = bad
    assert found == {}, f"modules importing a layer at or above their own: {found}"
    assert scanned >= 50  # the scan saw the package, and reads real imports:
    assert imported_parts((PACKAGE / "runs" / "runner.py").read_text()) >= {"engine", "catalogue", "tasks"}


def test_the_shared_vocabulary_imports_no_layer():
    for name in ("errors", "offline", "catalogue", "tasks", "provenance"):
        parts = imported_parts((PACKAGE / f"{name}.py").read_text())
        assert parts <= {"errors", "offline", "catalogue", "tasks", "provenance"}, (name, parts)


def test_the_scan_finds_an_upward_import_even_inside_a_function():
    """Negative control: an engine module importing the report lazily, and a runs module importing analysis."""
    lazy = "import torch\n\ndef f():\n    from reproduce.report import render\n    return render\n"
    assert violations("engine", lazy) == ["report"]
    assert violations("runs", "from reproduce import analysis\nimport reproduce.engine.lm\n") == ["analysis"]
    assert violations("runs", "from reproduce.distill import recipe\n") == ["distill"]  # same rank, other part
    assert violations("report", "from reproduce.runs.plan import Unit\nfrom reproduce import tasks\n") == []
    assert violations("engine", "from ..report import render\n") == ["a relative import"]
