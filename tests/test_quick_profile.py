"""`make reproduce PROFILE=quick`, end to end, as CI runs it: experiment, analysis and report.

Method: the quick profile (experiments/quick.yaml) runs for real on the offline target in a subprocess, exactly
the commands the Makefile's `reproduce` target runs (minus the losslessness suite, which has its own test
file), into a temporary directory. The test checks that every method produced rows, that greedy SpS matched
ArS token for token, and that the rendered report has all eight sections and the figures it links.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from reproduce.runs.results import read_rows

REPO = Path(__file__).resolve().parent.parent
SECTIONS = ["Table 1", "Speed", "Quality", "Why", "Figure 1", "Losslessness", "Hugging Face peers", "Limitations"]


@pytest.mark.slow
def test_quick_profile_end_to_end(tmp_path, smollm2):
    results, report = tmp_path / "results", tmp_path / "report" / "results.md"
    for command in (["run", "--profile", "quick", "--out", str(results)],
                    ["report", str(results), "--out", str(report)]):
        done = subprocess.run([sys.executable, "-m", "reproduce", *command], cwd=REPO, capture_output=True,
                              text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-2000:]

    rows = read_rows(results)
    # quick drafts with n-gram and the target itself, no separate draft model: so no draft-only rows
    assert {r["method"] for r in rows} == {"ars", "sps", "hf_generate", "hf_assisted"}
    greedy = {}
    for r in rows:
        if r["mode"] == "greedy" and r["method"] in ("ars", "sps"):
            greedy.setdefault((r["block"], r["task"], r["example_id"], r["sweep_value"]), []).append(r["generated_ids"])
    assert greedy and all(all(ids == group[0] for ids in group) for group in greedy.values())

    text = report.read_text()
    headings = re.findall(r"^## (?:\d+\. )?(.+)$", text, flags=re.M)
    for section in SECTIONS:
        assert any(h.startswith(section) for h in headings), f"section {section!r} missing from {headings}"
    figures = re.findall(r"\]\((figures/[^)]+\.png)\)", text)
    assert figures, "the report links its figures"
    for figure in figures:
        png = report.parent / figure
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r"\bnan\b", text), "every number is formatted; a missing one reads n/a"
