"""The paper-style report renders from raw results alone, exactly, and fails loudly on a missing value.

Method: tests/fixtures/report/ holds the raw results (rows.jsonl, manifest.json) of a real tiny run of
report-fixture.yaml (every method, a model draft, every sweep kind; see the README there). The report is
rendered from a copy of them, so the analysis runs for real, and the markdown is compared byte for byte with
the golden file tests/fixtures/report/golden_results.md. When a deliberate change to the template, the
report code or the analysis changes the text, review the diff and regenerate the golden file with

    UPDATE_GOLDEN=1 pytest tests/test_report.py

The other tests check that every figure the markdown links is a real non-empty PNG, that a value missing
from the analysis fails the render (Jinja2 StrictUndefined) instead of leaving a blank, that the filters
format as documented, that losslessness results are shown with a failure called out, and that a stale
summary.json is recomputed.
"""

from __future__ import annotations

import collections
import copy
import json
import os
import re
import shutil
from pathlib import Path

import jinja2
import pytest
import yaml

import reproduce.analysis.analyse
from reproduce.errors import ReproduceError
from reproduce.report import format as report_format
from reproduce.report import render, views
from reproduce.runs.config import EXPERIMENTS_DIR, load_config

FIXTURE = Path(__file__).parent / "fixtures" / "report"
GOLDEN = FIXTURE / "golden_results.md"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIGURE_LINKS = collections.defaultdict(lambda: "figures/figure.png")  # for renders that draw no figures


def _copy_results(destination: Path) -> Path:
    destination.mkdir(parents=True)
    for name in ("rows.jsonl", "manifest.json"):
        shutil.copy(FIXTURE / name, destination / name)
    return destination


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """The report rendered once from a copy of the fixture results (no summary.json: the analysis runs)."""
    root = tmp_path_factory.mktemp("report")
    results = _copy_results(root / "results")
    # the golden file must not depend on whether this machine can run bubblewrap
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(reproduce.analysis.analyse, "isolation_level", lambda: "bubblewrap+guard+rlimits")
        markdown = render.render_report(results, root / "reports" / "results.md")
    return {"results": results, "markdown": markdown, "text": markdown.read_text(),
            "summary": json.loads((results / "summary.json").read_text()),
            "manifest": json.loads((results / "manifest.json").read_text())}


@pytest.fixture(scope="module")
def paper():
    return yaml.safe_load(render.PAPER_FILE.read_text())


def test_report_matches_the_golden_file(rendered):
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(rendered["text"])
    assert rendered["text"] == GOLDEN.read_text(), (
        "the rendered report differs from tests/fixtures/report/golden_results.md; if the change is intended, "
        "regenerate it with UPDATE_GOLDEN=1 pytest tests/test_report.py and review the diff")


def test_report_has_every_section_and_no_unformatted_numbers(rendered):
    text = rendered["text"]
    headings = re.findall(r"^## (.+)$", text, flags=re.M)
    assert [h.split(".")[0] for h in headings[:11]] == [str(i) for i in range(1, 12)]
    assert headings[-1].startswith("Closing note")
    # the paper's Table 1 numbers appear beside ours, and a speed verdict for every task/mode group: one of the
    # three levels for the paper's rows, "not counted" for the others
    for number in ("2.01x", "1.92x", "2.46x", "0.157 / 0.156", "7.52 ms"):
        assert number in text
    levels = ("reproduced", "partly reproduced", "not reproduced", "not counted")
    assert sum(text.count(f"| {level} |") for level in levels) >= 5
    assert "**Speed, the paper's 3 Table 1 settings:" in text and "**not counted**" in text
    # every float went through a filter: none has more than 4 decimals (a raw repr would have ~16)
    assert not re.search(r"\d\.\d{5,}", text.replace("2302.01318", "arXiv id"))
    assert not re.search(r"\bNone\b|\b[Nn]a[Nn]\b|\binf\b", text)


def test_every_linked_figure_is_a_nonempty_png(rendered):
    import matplotlib.image

    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", rendered["text"])
    names = {Path(link).stem for link in links}
    assert {"figure1_k", "drafts_latency", "drafts_throughput", "drafts_speedup", "drafts_acceptance",
            "drafts_scatter", "cost_curve", "peers", "sweep_new_tokens", "sweep_prompt_length",
            "sweep_temperature"} <= names
    assert "sweep_k" not in names  # the sweep over K is drawn once, as Figure 1
    for link in links:
        path = rendered["markdown"].parent / link
        data = path.read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 20_000, link
        height, width = matplotlib.image.imread(path).shape[:2]
        assert width >= 600 and height >= 300, link


def test_a_missing_value_fails_the_render(rendered, paper):
    summary = copy.deepcopy(rendered["summary"])
    for entry in summary["methods"]:
        del entry["tokens_per_s_p95"]  # used only by the template
    context = views.build_context(summary, rendered["manifest"], paper)
    context["figures"] = FIGURE_LINKS
    with pytest.raises(jinja2.UndefinedError, match="tokens_per_s_p95"):
        render.render_markdown(context)

    context = views.build_context(copy.deepcopy(rendered["summary"]), rendered["manifest"], paper)
    context["figures"] = FIGURE_LINKS
    del context["setup"]["last"]["python"]
    with pytest.raises(jinja2.UndefinedError, match="python"):
        render.render_markdown(context)


def test_filters_format_as_documented():
    speedup = {"ratio_of_means": 1.2345, "ratio_of_means_ci": [1.05, 1.41]}
    assert report_format.fmt_x(speedup) == "1.23x [1.05, 1.41]"
    assert report_format.fmt_x(1.92) == "1.92x"
    assert report_format.fmt_ci({"mean": 0.1123, "ci": [0.09, 0.131], "n": 5}) == "0.112 [0.090, 0.131]"
    assert report_format.fmt_ci({"mean": 0.451, "ci": [0.4, 0.5], "n": 5}, 1, True) == "45.1% [40.0, 50.0]"
    assert report_format.fmt_ms(14.1, 2) == "14.10 ms" and report_format.fmt_ms(12345.6, 0) == "12,346 ms"
    assert report_format.fmt_pct(0.451) == "45.1%"
    assert report_format.fmt_p(0.0321) == "0.032" and report_format.fmt_p(2e-7) == "2.0e-07" and report_format.fmt_p(0.0) == "0"
    assert report_format.fmt_params(134515008) == "134.5M" and report_format.fmt_params(70e9) == "70B" and report_format.fmt_params(0) == "0"
    assert report_format.fmt_value(2.0) == "2" and report_format.fmt_value(0.5) == "0.5"
    assert report_format.fmt_duration(195) == "3 min 15 s" and report_format.fmt_duration(None) == "unfinished"
    assert report_format.fmt_num(None) == "n/a"  # a legitimately absent number (e.g. no drafted tokens)
    env = render.jinja_environment()
    with pytest.raises(jinja2.UndefinedError):
        env.from_string("{{ missing | fmt_ms }}").render()


def test_losslessness_results_are_shown_and_a_failure_is_called_out(rendered, paper, tmp_path):
    """Records as `pytest --stats-json` writes them (tests/conftest.py); other test files' records are dropped."""
    records = [
        {"test": "tests/test_losslessness.py::test_verify_monte_carlo_matches_target[1]", "phase": "call",
         "outcome": "passed", "seconds": 0.4, "g_test_p": 0.52, "draws": 20000},
        {"test": "tests/test_losslessness.py::test_sequence_tests_reject_wrong_rule[greedy_rule]", "phase": "call",
         "outcome": "failed", "seconds": 1.2, "g_test_p": 0.3, "two_sample_p": 2e-7},
        {"test": "tests/test_stats.py::test_tost", "phase": "call", "outcome": "passed", "seconds": 0.1},
    ]
    path = tmp_path / "losslessness.json"
    path.write_text(json.dumps(records))
    results = render.load_losslessness(path)
    assert [r["test"] for r in results] == ["test_verify_monte_carlo_matches_target[1]",
                                            "test_sequence_tests_reject_wrong_rule[greedy_rule]"]
    context = views.build_context(copy.deepcopy(rendered["summary"]), rendered["manifest"], paper, results)
    context["figures"] = FIGURE_LINKS
    text = render.render_markdown(context)
    assert "1 of 2 tests of `tests/test_losslessness.py` FAILED" in text
    assert "| `test_verify_monte_carlo_matches_target[1]` | passed | g_test_p = 0.520, draws = 20000 |" in text
    assert ("| `test_sequence_tests_reject_wrong_rule[greedy_rule]` | **FAILED** | g_test_p = 0.300, "
            "two_sample_p = 2.0e-07 |") in text

    records[1]["outcome"] = "passed"
    path.write_text(json.dumps(records))
    context["losslessness"] = views.losslessness_view(context["groups"], render.load_losslessness(path))
    assert "all 2 tests of `tests/test_losslessness.py` passed" in render.render_markdown(context)

    path.write_text(json.dumps({"test": "not a list"}))
    with pytest.raises(ReproduceError, match="JSON list"):
        render.load_losslessness(path)
    path.write_text(json.dumps(records[2:]))
    with pytest.raises(ReproduceError, match="no results of tests/test_losslessness.py"):
        render.load_losslessness(path)


def test_a_stale_summary_is_recomputed(rendered, tmp_path, monkeypatch):
    import reproduce.analysis.analyse

    results = _copy_results(tmp_path / "results")
    summary = results / "summary.json"
    summary.write_text(json.dumps(rendered["summary"]))
    calls = []
    monkeypatch.setattr(reproduce.analysis.analyse, "analyse", lambda out_dir: calls.append(out_dir))
    os.utime(summary, (1, 1))  # older than rows.jsonl
    render.load_summary(results)
    assert calls == [results]
    os.utime(summary, None)  # newer: read as is
    render.load_summary(results)
    assert calls == [results]
    with pytest.raises(ReproduceError, match="no experiment results"):
        render.load_summary(tmp_path)


def test_the_papers_rows_match_the_default_sampling_modes(paper):
    """Table 1 rows are matched to our runs by task and sampling settings: the shared defaults must hit all three."""
    modes = load_config(EXPERIMENTS_DIR / "defaults.yaml").modes
    matched = {(task, name): views._paper_row(task, mode.temperature, mode.top_p, paper)
               for task in ("xsum", "humaneval") for name, mode in modes.items()}
    assert matched[("xsum", "greedy")]["sps"]["ms_per_token"] == 7.00
    assert matched[("xsum", "xsum_nucleus")]["speedup"] == 1.92
    assert matched[("humaneval", "code_nucleus")]["speedup"] == 2.46
    assert matched[("humaneval", "greedy")] is None and matched[("xsum", "code_nucleus")] is None
