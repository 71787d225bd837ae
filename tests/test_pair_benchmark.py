"""benchmarks/pair.py: the pair's targets, judged from a run's rows. Method: a copy of the committed SmolLM2 default
run of 2026-11-22 (tests/fixtures/smollm2-run-2026-11-22, once reports/raw/default) goes through the real analysis; the checks are compared with what its rows say: best greedy HumanEval decode-loop speedup 1.60x [1.27, 2.01]
with ngram at K=4 on 12 prompts (these rows predate decode_ms, so decode = (wall_ms - prefill_ms) per token; the
geometric mean of the per-prompt ratios with a t interval on their logs, recomputed by hand from rows.jsonl), best
XSum nucleus 1.10x (ngram K=2) against the 1.4x target, 246/246 greedy SpS rows identical to ArS (every block: main
90 + 36 + 36, the K sweep 48, the length sweeps 16 + 16, the temperature sweep 4), no model draft in that run. The numbers are that run's, not the pair's: this tests the judging, not the pair."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from benchmarks.pair import pair_tables, render

RAW = Path(__file__).resolve().parent / "fixtures" / "smollm2-run-2026-11-22"
REPO = Path(__file__).resolve().parent.parent
LLAMACPP_CHECKS = ("HumanEval greedy: our fastest SpS", "HumanEval greedy: our ArS")  # issue 24's three


def test_targets_are_judged_from_the_rows(tmp_path):
    for name in ("rows.jsonl", "manifest.json"):
        shutil.copy(RAW / name, tmp_path / name)
    tables = pair_tables(tmp_path)
    checks = {c["target"].split(":")[0]: c for c in tables["pair_checks"]}
    greedy_code = checks["humaneval T=0"]
    assert greedy_code["met"] is False and greedy_code["measured"].startswith("1.60x [1.27, 2.01] with ngram K=4 on 12 prompts")
    assert checks["xsum T=1"]["met"] is False and checks["xsum T=1"]["measured"].startswith("1.10x")  # against 1.4x
    efficiency = next(c for c in tables["pair_checks"] if c["target"].startswith("efficiency"))
    assert efficiency["met"] is None  # no model draft ran: n/a, not "met"
    identity = next(c for c in tables["pair_checks"] if c["target"].startswith("greedy SpS"))
    assert identity["met"] is True and identity["measured"].startswith("246/246 greedy SpS rows identical")
    assert {r["mode"] for r in tables["pass_at_1"]} == {"greedy", "code_nucleus"}
    text = render(tables, "test")
    assert "| NOT MET |" in text and "| n/a |" in text


def test_llamacpp_targets_are_judged_from_the_peer_rows(tmp_path):
    """Issue 24's three checks on the committed llama.cpp peer run (reports/llamacpp-peer/raw/llamacpp-peer, 20
    HumanEval greedy prompts, the w4a8 target with the fused layer ops, 2026-12-04): ratios as the report's peer table has them (tests/test_llamacpp.py
    recomputes those from the rows); the SmolLM2 fixture, without llama.cpp rows, gets n/a, never "met"."""
    raw = Path(__file__).resolve().parent.parent / "reports" / "llamacpp-peer" / "raw" / "llamacpp-peer"
    for name in ("rows.jsonl", "manifest.json"):
        shutil.copy(raw / name, tmp_path / name)
    checks = [c for c in pair_tables(tmp_path)["pair_checks"] if c["target"].startswith(LLAMACPP_CHECKS)]
    assert [c["met"] for c in checks] == [True, True, True]
    assert checks[0]["measured"].startswith("1.87x [1.79, 1.95] (llama.cpp 14.7 tok/s vs SpS[qwen-0.5b-stop0.4,K=3] "
                                            "27.3")
    # llama.cpp's fastest speculative decoding here is its prompt lookup: its draft-model run (13.1 tok/s) is slower
    assert checks[1]["measured"].startswith("1.94x [1.81, 2.07] (llama.cpp n-gram[ngram,K=2] 14.0 tok/s")
    assert checks[2]["measured"].startswith("1.17x [1.16, 1.18] (llama.cpp 14.7 tok/s vs ArS 17.2 tok/s")
    other = tmp_path / "smollm2"
    other.mkdir()
    for name in ("rows.jsonl", "manifest.json"):
        shutil.copy(RAW / name, other / name)
    checks = [c for c in pair_tables(other)["pair_checks"] if c["target"].startswith(LLAMACPP_CHECKS)]
    assert len(checks) == 3 and all(c["met"] is None for c in checks)


def test_the_avx2_paths_run_is_judged_as_avx2_and_misses_the_llamacpp_targets(tmp_path):
    """The committed run on torch's AVX2 paths with an AVX2-only llama.cpp build (reports/llamacpp-peer-avx2): its
    manifest records the kernel environment, so the run counts as "AVX2 only" (the 1.5x HumanEval bar, not 2.5x),
    and there our SpS is not 1.3x llama.cpp's nor our ArS within 1.25x of its plain decoding (the 2026-12-03 rerun
    with all three peers): the checks must say NOT MET, not pass because the bars moved."""
    raw = Path(__file__).resolve().parent.parent / "reports" / "llamacpp-peer-avx2" / "raw" / "llamacpp-peer-avx2"
    for name in ("rows.jsonl", "manifest.json"):
        shutil.copy(raw / name, tmp_path / name)
    tables = pair_tables(tmp_path)
    session = json.loads((tmp_path / "manifest.json").read_text())["sessions"][0]
    assert session["kernel_env"]["ATEN_CPU_CAPABILITY"] == "avx2" and session["cpu_native_bf16"] is False
    checks = {c["target"]: c for c in tables["pair_checks"]}
    assert checks["humaneval T=0: speedup >= 1.5x"]["met"] is False
    llamacpp = [c for c in tables["pair_checks"] if c["target"].startswith(LLAMACPP_CHECKS)]
    assert [c["met"] for c in llamacpp] == [False, False, False]
    assert llamacpp[0]["measured"].startswith("1.00x [0.94, 1.07]")
    assert llamacpp[2]["measured"].startswith("0.79x [0.78, 0.80]")  # within 1.25x means >= 0.8


def test_the_avx2_paths_run_with_the_w4a8_target_meets_the_llamacpp_targets(tmp_path):
    """The same AVX2-paths setup rerun with the w4a8 target (reports/llamacpp-peer-avx2-w4a8, 20 prompts, 2026-12-04):
    judged as AVX2 (its manifest's kernel environment), issue 24's three checks now met by the margins the rows give,
    and issue 23's practical 1.6x still not (1.57x): both verdicts come from the rows, so a met check here is the
    run's, not a moved bar."""
    raw = REPO / "reports" / "llamacpp-peer-avx2-w4a8" / "raw" / "llamacpp-peer-avx2-w4a8"
    for name in ("rows.jsonl", "manifest.json"):
        shutil.copy(raw / name, tmp_path / name)
    tables = pair_tables(tmp_path)
    session = json.loads((tmp_path / "manifest.json").read_text())["sessions"][0]
    assert session["kernel_env"]["ATEN_CPU_CAPABILITY"] == "avx2" and session["cpu_native_bf16"] is False
    llamacpp = [c for c in tables["pair_checks"] if c["target"].startswith(LLAMACPP_CHECKS)]
    assert [c["met"] for c in llamacpp] == [True, True, True]
    assert llamacpp[0]["measured"].startswith("2.06x [1.97, 2.15] (llama.cpp 12.2 tok/s")
    assert llamacpp[2]["measured"].startswith("1.31x [1.30, 1.32]")
    practical = [c for c in tables["pair_checks"] if "practical regime" in c["target"] and "SpS >=" in c["target"]]
    assert [c["met"] for c in practical] == [False]
    assert practical[0]["measured"].startswith("1.57x [1.50, 1.64]")


def test_the_practical_regime_is_judged_against_the_fastest_ars_measured(tmp_path):
    """Issue 23's practical regime is SpS against the fastest batch-invariant ArS. In session 9's default run
    llama.cpp's plain decoding (80.5 ms a token) beat our fast-int4 ArS (87.6 ms) on HumanEval greedy, so the check
    measures the model-draft SpS against it: 1.46x [1.37, 1.57], the report's headline column (tests/test_report.py
    recomputes it from the rows), not the 1.59x against our own ArS. The SmolLM2 run, without llama.cpp rows, is
    judged against our ArS as before."""
    for name in ("rows.jsonl", "manifest.json"):
        shutil.copy(REPO / "reports" / "default-session9" / "raw" / "default" / name, tmp_path / name)
    practical = [c for c in pair_tables(tmp_path)["pair_checks"] if "practical regime" in c["target"]
                 and "SpS >=" in c["target"]]
    assert len(practical) == 1
    assert "against the fastest ArS measured, llama.cpp's 80.5 ms a token" in practical[0]["target"]
    assert practical[0]["met"] is False
    assert practical[0]["measured"] == "1.46x [1.37, 1.57] (SpS[qwen-0.5b,K=3], n=20)"
    other = tmp_path / "smollm2"
    other.mkdir()
    for name in ("rows.jsonl", "manifest.json"):
        shutil.copy(RAW / name, other / name)
    practical = [c for c in pair_tables(other)["pair_checks"] if "practical regime" in c["target"]
                 and "SpS >=" in c["target"]]
    assert len(practical) == 1 and "fastest ArS measured" not in practical[0]["target"]
