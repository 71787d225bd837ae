"""`python -m reproduce analyse` and `report`, and the analysis and report packages, never import torch or
transformers (a report pays neither the ~2 s nor the install for them).

Method: each check runs in a fresh Python subprocess (this test process has imported torch already): one
imports every module of reproduce.analysis and reproduce.report and loads the shipped `evaluate` metrics, one runs the analyse and report commands
through the CLI's main() on a copy of the report fixture's raw results; each then prints which of torch and
transformers sys.modules holds.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "report"
HEAVY = ("torch", "transformers")

# evaluate_metrics/ holds `evaluate` scripts, loaded by path through metrics.load_metric (which keeps evaluate from
# importing transformers), never imported as modules: they are loaded that way here
IMPORT_ALL = """
import importlib, pkgutil, sys
import reproduce.analysis, reproduce.report
from reproduce.analysis.metrics import SHIPPED_METRICS, load_metric
for package in (reproduce.analysis, reproduce.report):
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if ".evaluate_metrics" not in module.name:
            importlib.import_module(module.name)
for name in SHIPPED_METRICS:
    load_metric(name)
"""

COMMANDS = """
import sys
from reproduce.cli import main
results, out = sys.argv[1], sys.argv[2]
assert main(["analyse", results]) == 0
assert main(["report", results, "--out", out]) == 0
"""

REPORT_ONLY = """
import sys
from reproduce.cli import main
assert main(["report", sys.argv[1], "--out", sys.argv[2]]) == 0
"""


def _loaded_after(script: str, *args: str) -> list[str]:
    probe = script + f"\nimport json\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, cwd=REPO,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_analysis_and_report_packages_import_no_torch():
    assert _loaded_after(IMPORT_ALL) == []


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    results = tmp_path_factory.mktemp("torch-free") / "results"
    results.mkdir()
    for name in ("rows.jsonl", "manifest.json"):
        shutil.copy(FIXTURE / name, results / name)
    return results


def test_analyse_and_report_commands_import_no_torch(results, tmp_path):
    assert _loaded_after(COMMANDS, str(results), str(tmp_path / "report.md")) == []
    assert (tmp_path / "report.md").is_file()
    # and the report alone, on the summary the analysis wrote
    assert _loaded_after(REPORT_ONLY, str(results), str(tmp_path / "again.md")) == []
