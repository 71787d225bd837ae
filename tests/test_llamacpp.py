"""The llama.cpp runtime (reproduce/engine/llamacpp_lm.py) and its probe, on tiny Qwen2 GGUFs written here.

Method: tiny random Qwen2 models (reproduce.engine.models.tiny_random_model) are written as GGUFs with the gguf
package (reproduce.engine.tiny_gguf): in F32, whose logits must match the Hugging Face model's (the GGUF holds the
model we think), and in Q8_0, 64 wide, where llama.cpp runs its quantized kernels as on a real GGUF. On them: a
batched forward against single-token calls (close always; bitwise exactly where the probe says so), rollback and
re-forward (bitwise), fresh() (one model, separate caches), and greedy SpS == ArS with a llama.cpp target wherever
the probe finds llama.cpp batch-invariant at K+1 rows; where it does not, that the probe says so and `auto` does
not pick llama.cpp for a target. A missing llama-cpp-python must give one line naming `make install`. The
losslessness G-test of a llama.cpp target is in tests/test_losslessness.py.

Everything but the missing-module test needs llama-cpp-python (`make install` builds it); without it they skip.
"""

from __future__ import annotations

import functools
import sys

import pytest
import torch

from reproduce.engine.decoding import autoregressive_decode, speculative_decode
from reproduce.engine.drafters import ModelDrafter, NgramDrafter
from reproduce.engine.lm import CachedLM
from reproduce.engine.models import tiny_random_model
from reproduce.engine.probe import ModeProbe, choose
from reproduce.engine.sampling import SamplingParams
from reproduce.errors import ReproduceError

pytestmark = pytest.mark.usefixtures("single_thread")

VOCAB = 10
GREEDY = SamplingParams(temperature=0.0)
PROMPTS = [[1, 2, 3], [4, 4, 4, 4, 5], [9, 0, 7, 7, 1, 2, 3, 1, 2]]
# F32: 16 wide (the losslessness tests' tiny models); Q8_0 groups 32 inputs: 64 wide, gentler weights
SIZES = {"F32": {}, "Q8_0": dict(hidden_size=64, intermediate_size=128, initializer_range=0.3)}


@functools.cache
def tiny_qwen2(seed: int, weight_type: str):
    return tiny_random_model("qwen2", vocab_size=VOCAB, seed=seed, **SIZES[weight_type]).model


@pytest.fixture(scope="module")
def gguf_dir(tmp_path_factory):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (make install builds it)")
    return tmp_path_factory.mktemp("gguf")


@pytest.fixture(scope="module")
def tiny_lm(gguf_dir):
    """LlamaCppLM over a tiny Qwen2 GGUF (seed, weight type), one per GGUF for the module."""
    from reproduce.engine.llamacpp_lm import LlamaCppLM
    from reproduce.engine.tiny_gguf import write_qwen2_gguf

    built = {}

    def make(seed: int = 7, weight_type: str = "F32"):
        if (seed, weight_type) not in built:
            path = write_qwen2_gguf(tiny_qwen2(seed, weight_type), gguf_dir / f"qwen2-{seed}-{weight_type}.gguf",
                                    weight_type)
            built[seed, weight_type] = LlamaCppLM.load(path, VOCAB, n_threads=1)
        lm = built[seed, weight_type]
        lm.reset()
        return lm

    return make


def test_f32_gguf_computes_the_hugging_face_model(tiny_lm):
    """Close, not equal: llama.cpp keeps its KV cache in f16 (measured max difference 3e-3 on logits of ~10)."""
    lm, reference = tiny_lm(), CachedLM(tiny_qwen2(7, "F32"), VOCAB)
    reference.reset()
    ids = [1, 2, 3, 4, 5, 6, 7]
    ours, theirs = lm.forward(ids), reference.forward(ids)
    assert ours.shape == (len(ids), VOCAB) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, theirs, atol=2e-2, rtol=0)
    assert (ours - theirs).abs().max() > 0  # it is llama.cpp's computation, not a copy of the reference


@pytest.mark.parametrize("weight_type", ["F32", "Q8_0"])
def test_batched_rows_match_single_token_calls_as_the_probe_says(tiny_lm, weight_type):
    """Rows of forward([a, b, c, ...]) against one call per token: within 1e-4 always, and bitwise exactly when the
    probe says the runtime is batch-invariant (measured on this CPU: F32 is not, by ~4e-6; Q8_0 is)."""
    from reproduce.engine.llamacpp_probe import probe_lm

    lm = tiny_lm(7, weight_type)
    ids = [1, 2, 3, 4, 5, 6, 7, 8]
    batched = lm.forward(ids)
    lm.reset()
    single = torch.cat([lm.forward([token]) for token in ids])
    torch.testing.assert_close(batched, single, atol=1e-4, rtol=0)
    probe = probe_lm(lm, repeats=1)
    assert probe.mode == "llama.cpp" and sorted(probe.ms) == list(range(1, 10))
    lm.reset()
    lm.forward(ids[:1])
    rows_equal = torch.equal(lm.forward(ids[1:]), single[1:])  # 7 rows after a 1-token prompt
    assert rows_equal == probe.invariant_at(7)


@pytest.mark.parametrize("weight_type", ["F32", "Q8_0"])
def test_last_only_is_the_last_row(tiny_lm, weight_type):
    lm = tiny_lm(7, weight_type)
    full = lm.forward([1, 2, 3, 4])
    lm.reset()
    last = lm.forward([1, 2, 3, 4], last_only=True)
    assert last.shape == (1, VOCAB)
    torch.testing.assert_close(last, full[-1:], atol=1e-5, rtol=0)


@pytest.mark.parametrize("weight_type", ["F32", "Q8_0"])
def test_rollback_then_reforward_is_bitwise(tiny_lm, weight_type):
    """A rollback removes exactly the dropped positions: re-forwarding them returns bitwise the same logits, also after
    other tokens were written there in between (rejected drafts)."""
    lm = tiny_lm(7, weight_type)
    first = lm.forward([1, 2, 3, 4, 5, 6])
    lm.rollback(3)
    assert lm.cache_tokens == [1, 2, 3]
    lm.forward([9, 9, 9, 9])  # drafts that get rejected
    lm.rollback(3)
    assert torch.equal(lm.forward([4, 5, 6]), first[3:])
    lm.reset()
    assert lm.cache_tokens == [] and torch.equal(lm.forward([1, 2, 3, 4, 5, 6]), first)


def test_fresh_shares_the_model_with_a_cache_of_its_own(tiny_lm):
    lm = tiny_lm()
    expected = lm.forward([1, 2, 3])
    lm.reset()
    lm.forward([5, 6])
    other = lm.fresh()
    assert other.model is lm.model and other.cache_tokens == [] and lm.cache_tokens == [5, 6]
    assert torch.equal(other.forward([1, 2, 3]), expected)  # the same weights, an empty cache of its own
    assert torch.equal(lm.forward([7]), lm.fresh().next_logits([5, 6, 7])[None])  # lm's cache was untouched


def test_context_overflow_is_one_line(tiny_lm):
    lm = tiny_lm()
    with pytest.raises(ReproduceError, match=r"exceed the llama.cpp context of 256") as error:
        lm.forward([1] * 300)  # the tiny model's context (max_position_embeddings) is 256
    assert "\n" not in str(error.value) and lm.cache_tokens == []


def greedy_cases(target, drafters, ks):
    """(prompt, drafter, K, ArS tokens, SpS tokens) for every case; each SpS proposes something."""
    generator = torch.Generator().manual_seed(0)
    for prompt in PROMPTS:
        ars = autoregressive_decode(target, prompt, 24, GREEDY, generator).tokens
        for name, drafter in drafters.items():
            for k in ks:
                sps = speculative_decode(target, drafter, prompt, k, 24, GREEDY, generator)
                assert sps.proposed > 0
                yield prompt, name, k, ars, sps


@pytest.mark.parametrize("weight_type", ["F32", "Q8_0"])
def test_greedy_sps_equals_ars_where_llamacpp_is_batch_invariant(tiny_lm, weight_type):
    """Greedy SpS with a llama.cpp target emits exactly ArS's tokens, token for token, for every K at which the
    probe finds llama.cpp batch-invariant (K+1 rows); at a K where it is not, the probe must say so (it saw rows
    differ) and `auto` must not pick llama.cpp for that target while a batch-invariant mode exists."""
    from reproduce.engine.llamacpp_probe import probe_lm

    target = tiny_lm(7, weight_type)
    probe = probe_lm(target.fresh(), repeats=1)
    drafters = {"llama.cpp draft": ModelDrafter(tiny_lm(12, weight_type).fresh()), "ngram": NgramDrafter(VOCAB)}
    checked = {"equal": 0, "not invariant": 0}
    rejections = 0
    for prompt, name, k, ars, sps in greedy_cases(target, drafters, ks=(1, 2, 3, 5)):
        rejections += sps.proposed - sps.accepted
        if probe.invariant_at(k + 1):
            assert sps.tokens == ars, f"{weight_type}, {name}, K={k}, prompt {prompt}: SpS {sps.tokens} != ArS {ars}"
            checked["equal"] += 1
        else:
            assert not probe.batch_invariant and "differ" in probe.note
            slower_invariant = ModeProbe("int8", {n: 1000.0 * probe.ms[n] for n in probe.ms}, True)
            assert choose([probe, slower_invariant], "target", k).runtime == "fast-int8"
            checked["not invariant"] += 1
    assert rejections > 0  # drafts were rejected, so rollbacks ran
    # what this CPU measured when the test was written (an AVX-512 Xeon): F32 is not batch-invariant, Q8_0 is. On
    # another CPU either may flip; the assertions above still hold, and this line says which branch ran.
    print(f"{weight_type}: {checked}, probe: {probe.note}")
    assert sum(checked.values()) == len(PROMPTS) * 2 * 4


def test_auto_picks_llamacpp_for_a_target_only_at_a_k_where_it_is_batch_invariant():
    """choose() on made-up probes: llama.cpp, fast and flat here but batch-invariant up to 7 rows only (as on our
    Xeon), is a target's candidate for K <= 6 only; a draft's wherever it is fastest."""
    llamacpp = ModeProbe("llama.cpp", {n: 10.0 for n in range(1, 10)}, False, invariant_rows=7)
    slower = ModeProbe("int4", {n: 50.0 for n in range(1, 10)}, True)
    assert choose([llamacpp, slower], "target", 6).runtime == "llama.cpp"  # 7 rows: invariant
    assert choose([llamacpp, slower], "target", 7).runtime == "fast-int4"  # 8 rows: not
    assert choose([llamacpp, slower], "flattest", 7).runtime == "fast-int4"
    # the paper's regime offered K = 2 and 7: llama.cpp counts at K = 2 only, where flat int4 at K = 7 predicts more
    paper = choose([llamacpp, slower], "flattest", 7, k_options=(2, 7))
    assert (paper.runtime, paper.k) == ("fast-int4", 7)
    assert choose([llamacpp, slower], "flattest", 2, k_options=(1, 2)).runtime == "llama.cpp"  # equal: the faster
    assert choose([llamacpp, slower], "draft", 7).runtime == "llama.cpp"
    choice = choose([llamacpp, slower], "target", 7, k_options=(2, 7))  # only K=2 counts for llama.cpp
    assert choice.runtime == "llama.cpp" and "at K=2" in choice.reason
    never_invariant = ModeProbe("llama.cpp", {n: 10.0 for n in range(1, 10)}, False, invariant_rows=1)
    assert choose([never_invariant, slower], "target", 1).runtime == "fast-int4"


def test_build_lm_runs_a_gguf_path_in_llamacpp(gguf_dir, tiny_lm):
    from reproduce.engine.llamacpp_lm import LlamaCppLM
    from reproduce.engine.runtime import build_lm

    tiny_lm()  # writes the GGUF
    lm = build_lm(gguf_dir / "qwen2-7-F32.gguf", VOCAB, "llama.cpp")
    assert isinstance(lm, LlamaCppLM) and lm.vocab_size == VOCAB
    with pytest.raises(ReproduceError, match="runs in runtime llama.cpp, not 'fast-int8'"):
        build_lm(gguf_dir / "qwen2-7-F32.gguf", VOCAB, "fast-int8")
    with pytest.raises(ReproduceError, match="was not loaded from one"):
        build_lm(tiny_qwen2(7, "F32"), VOCAB, "llama.cpp")


def test_missing_llama_cpp_is_one_line_naming_make_install(monkeypatch, tmp_path):
    """Simulated: `import llama_cpp` fails (None in sys.modules makes it raise ImportError). The rest of the engine
    still works: `auto` leaves llama.cpp out instead of failing."""
    from reproduce.engine.llamacpp_lm import LlamaCppLM
    from reproduce.engine.runtime import build_lm, llamacpp_eligible

    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    for attempt in (lambda: LlamaCppLM.load(tmp_path / "any.gguf"),
                    lambda: build_lm(tmp_path / "any.gguf", VOCAB, "llama.cpp")):
        with pytest.raises(ReproduceError, match=r"needs llama-cpp-python.*run `make install`") as error:
            attempt()
        assert "\n" not in str(error.value)
    model = tiny_qwen2(7, "F32")
    model.gguf_source = str(tmp_path / "any.gguf")
    try:
        assert not llamacpp_eligible(model)
    finally:
        del model.gguf_source


def test_report_finds_the_losslessness_tests_of_the_llamacpp_runtime():
    from reproduce.report.lossless import runs_runtime

    assert runs_runtime("test_x[qwen2-llama.cpp-fast-fp32]", "llama.cpp")
    assert not runs_runtime("test_x[qwen2-llama.cpp-llama.cpp]", "hf")
    assert not runs_runtime("test_x[qwen2-fast-int8-fast-int8]", "llama.cpp")


def test_llamacpp_peers_agree_when_greedy_and_time_the_decode_loop(gguf_dir, tiny_lm):
    """runs/llamacpp_peer.py on the Q8_0 tiny GGUF (batch-invariant here): llama.cpp's own prompt-lookup speculative
    decoding (llama-cpp-python's Llama.generate) emits, greedy, exactly the tokens of its plain decoding through our
    loop (the two share llama.cpp's numerics, flash attention included); each prompt is prefilled once, timed apart
    from the decode loop; sampled decoding runs too."""
    from types import SimpleNamespace

    from reproduce.runs.llamacpp_peer import DECODERS
    from reproduce.runs.plan import Method
    from reproduce.runs.decoders import PromptCaches

    tiny_lm(7, "Q8_0")  # writes the GGUF
    target = SimpleNamespace(model=SimpleNamespace(gguf_source=str(gguf_dir / "qwen2-7-Q8_0.gguf")))
    pool = SimpleNamespace(target=target, vocab_size=VOCAB, target_lm=None, llamacpp=None,
                           config=SimpleNamespace(draft=lambda name: SimpleNamespace(ngram_size=3)))
    plain, ngram = Method("llamacpp_ars"), Method("llamacpp_ngram", "ngram", 4)
    for prompt in PROMPTS:
        caches = PromptCaches(prompt)
        traces = {}
        for temperature in (0.0, 1.0):
            unit = SimpleNamespace(max_new_tokens=20, params=SamplingParams(temperature=temperature))
            for method in (plain, ngram):
                trace = DECODERS[method.kind](pool, unit, method, prompt, torch.Generator().manual_seed(0), None,
                                              1234, caches)
                assert len(trace.tokens) == 20 and all(0 <= t < VOCAB for t in trace.tokens)
                assert trace.decode_ms > 0 and trace.prefill_ms > 0
                traces[method.kind, temperature] = trace
        assert traces["llamacpp_ngram", 0.0].tokens == traces["llamacpp_ars", 0.0].tokens
        # one prefill per model per prompt, shared by both temperatures
        assert traces["llamacpp_ars", 0.0].prefill_ms == traces["llamacpp_ars", 1.0].prefill_ms
        assert traces["llamacpp_ngram", 0.0].prefill_ms == traces["llamacpp_ngram", 1.0].prefill_ms


def test_report_says_where_the_llamacpp_peers_are_or_why_not():
    from types import SimpleNamespace

    from reproduce.report.peers import llamacpp_note

    with_rows = (SimpleNamespace(rows=[SimpleNamespace(method="ars"), SimpleNamespace(method="llamacpp_ars")]),)
    without = (SimpleNamespace(rows=[SimpleNamespace(method="ars")]),)
    configured = {"methods": ["ars", "llamacpp_ars", "llamacpp_ngram"]}
    installed = {"sessions": [{"versions": {"llama-cpp-python": "0.3.36"}}]}
    missing = {"sessions": [{"versions": {"llama-cpp-python": None}}]}
    assert "are rows of the tables above" in llamacpp_note(with_rows, configured, installed)
    assert "not installed when this run ran" in llamacpp_note(without, configured, missing)
    assert "no rows of `llamacpp_ars`, `llamacpp_ngram`" in llamacpp_note(without, configured, installed)
    assert "include none of" in llamacpp_note(without, {"methods": ["ars"]}, installed)
    assert "not its draft-model speculative decoding" in llamacpp_note(with_rows, configured, installed)
    with_draft = (SimpleNamespace(rows=[SimpleNamespace(method="llamacpp_ars"), SimpleNamespace(method="llamacpp_draft")]),)
    assert "`llamacpp_draft`: its `llama-speculative-simple` tool" in llamacpp_note(with_draft, configured, installed)
    assert "make reproduce PROFILE=llamacpp-peer" in llamacpp_note(without, {"methods": ["ars"]}, installed)


def test_appendix_shows_the_llamacpp_probe(tmp_path):
    """A manifest's runtime choice with a llama.cpp probe (as runtime.auto_choice records it) renders as runtime
    `llama.cpp`, with the row count up to which it is batch-invariant."""
    from reproduce.report.setup import probes_view

    llamacpp = {"mode": "llama.cpp", "ms": {"1": 76.3, "2": 111.0, "3": 137.3}, "batch_invariant": False, "ok": True,
                "note": "calls of 8+ rows differ", "invariant_rows": 7}
    int4 = {"mode": "int4", "ms": {"1": 70.0, "2": 71.0, "3": 79.0}, "batch_invariant": True, "ok": True, "note": ""}
    manifest = {"runtime_choices": {"target": {"runtime": "fast-int4", "reason": "r", "k": 2,
                                               "probes": [int4, llamacpp]}},
                "models": {"target": {"runtime": "fast-int4"}}}
    _, (table,), _ = probes_view(manifest)
    assert [p.runtime for p in table.probes] == ["fast-int4", "llama.cpp"]
    assert table.probes[1].invariant_rows == 7 and table.probes[0].invariant_rows is None


def test_auto_leaves_llamacpp_out_for_a_restricted_draft(monkeypatch):
    """A draft with a restricted head (drafters.RestrictedDrafter) needs the fast runtime: auto does not probe
    llama.cpp for its model, and naming llama.cpp for it is one line."""
    from reproduce.engine import runtime
    from reproduce.engine.drafters import draft_lm

    monkeypatch.setattr(runtime, "import_llama_cpp", lambda: None)  # as if installed
    model = tiny_random_model("qwen2", vocab_size=VOCAB, seed=3).model
    model.gguf_source = "/any/model.gguf"
    assert runtime.llamacpp_eligible(model)
    model.restricted_head = True
    assert not runtime.llamacpp_eligible(model)
    with pytest.raises(ReproduceError, match="restricted head runs in a fast runtime"):
        draft_lm(model, VOCAB, "llama.cpp", kept=torch.tensor([1, 2, 3]))


def test_build_target_runs_a_loaded_gguf_model_in_llamacpp(gguf_dir, tiny_lm):
    """What `generate --runtime llama.cpp` and the runner do with a model loaded from a GGUF (models.load_model
    records its file in `gguf_source`): the target LM is llama.cpp over that very file."""
    from reproduce.engine.llamacpp_lm import LlamaCppLM
    from reproduce.engine.models import LoadedModel
    from reproduce.engine.runtime import build_target

    tiny_lm(7, "Q8_0")  # writes the GGUF
    model = tiny_random_model("qwen2", vocab_size=VOCAB, seed=7, **SIZES["Q8_0"]).model
    model.gguf_source = str(gguf_dir / "qwen2-7-Q8_0.gguf")
    runtime, lm = build_target(LoadedModel("tiny", model, None, "gguf"), "llama.cpp", k=4)
    assert runtime == "llama.cpp" and isinstance(lm, LlamaCppLM) and lm.model.path == model.gguf_source
    assert torch.equal(lm.forward([1, 2, 3]), tiny_lm(7, "Q8_0").forward([1, 2, 3]))


def test_peer_table_ratios_are_the_rows_paired_by_prompt(tmp_path):
    """The committed llama.cpp peer run (reports/llamacpp-peer/raw/llamacpp-peer, HumanEval greedy, 10 prompts) through the real
    analysis and report: each tokens/s cell is 1000 / the mean decode ms/token of its rows, and each ratio the
    geometric mean over prompts of llama.cpp's decode ms/token over ours, recomputed here from rows.jsonl with
    numpy. A run without llama.cpp rows (the SmolLM2 fixture) gets no table. Needs no llama-cpp-python."""
    import json
    import shutil
    from pathlib import Path

    import numpy as np

    from reproduce.analysis.summary import analyse
    from reproduce.report.context import build_report
    import yaml

    from reproduce.report.render import PAPER_FILE

    raw = Path(__file__).resolve().parent.parent / "reports" / "llamacpp-peer" / "raw" / "llamacpp-peer"
    for name in ("rows.jsonl", "manifest.json"):
        shutil.copy(raw / name, tmp_path / name)
    analyse(tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())  # as the report reads it
    report = build_report(summary, summary["manifest"], yaml.safe_load(PAPER_FILE.read_text()))
    (peer,) = report.llamacpp_peers
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]

    def decode(method, draft=None, k=None):
        picked = {r["example_id"]: r["decode_ms"] / r["num_tokens"] for r in rows
                  if r["method"] == method and r["draft"] == draft and r["k"] == k}
        return np.array([picked[i] for i in sorted(picked)])

    ours_ars, ours_sps = decode("ars"), decode("sps", peer.sps.draft, peer.sps.k)
    plain, lookup = decode("llamacpp_ars"), decode("llamacpp_ngram", "ngram", 2)
    assert len(ours_ars) == len(plain) == 20
    assert peer.plain.decode_tokens_per_s == pytest.approx(1000 / plain.mean(), rel=1e-6)
    assert peer.sps_over_plain.ratio == pytest.approx(np.exp(np.log(plain / ours_sps).mean()), rel=1e-6)
    assert peer.sps_over_speculative.ratio == pytest.approx(np.exp(np.log(lookup / ours_sps).mean()), rel=1e-6)
    assert peer.ars_over_plain.ratio == pytest.approx(np.exp(np.log(plain / ours_ars).mean()), rel=1e-6)
    assert peer.sps is report.settings[0].best  # the fastest SpS of section 1, not another

    fixture = Path(__file__).resolve().parent / "fixtures" / "smollm2-run-2026-11-22"
    other = tmp_path / "no-peers"
    other.mkdir()
    for name in ("rows.jsonl", "manifest.json"):
        shutil.copy(fixture / name, other / name)
    analyse(other)
    summary = json.loads((other / "summary.json").read_text())
    assert build_report(summary, summary["manifest"], yaml.safe_load(PAPER_FILE.read_text())).llamacpp_peers == ()


def test_the_appendix_names_the_kernel_environment_and_the_llamacpp_build(tmp_path):
    """The AVX2-paths peer run (reports/llamacpp-peer-avx2) rendered again with a llama.cpp build string added to its
    session (runs record it from 9ea5bfa on): the appendix's CPU line says torch was held to AVX2, without native
    bf16, and names the build, so an AVX2 figure measured on an AVX-512 CPU is never read as a native one."""
    import json
    import shutil
    import subprocess
    from pathlib import Path

    raw = Path(__file__).resolve().parent.parent / "reports" / "llamacpp-peer-avx2" / "raw" / "llamacpp-peer-avx2"
    for name in ("rows.jsonl", "manifest.json"):
        shutil.copy(raw / name, tmp_path / name)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["sessions"][0]["llama_cpp_build"] = "CPU : AVX2 = 1 | FMA = 1 |"
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    for command in (["analyse", str(tmp_path)], ["report", str(tmp_path), "--out", str(tmp_path / "results.md")]):
        subprocess.run([sys.executable, "-m", "reproduce", *command], check=True, capture_output=True)
    cpu = next(line for line in (tmp_path / "appendix.md").read_text().splitlines() if line.startswith("- **CPU**"))
    assert "without native bf16 (torch's kernels held below the CPU's instruction set: `ATEN_CPU_CAPABILITY=avx2`" in cpu
    assert cpu.endswith("llama.cpp build: `CPU : AVX2 = 1 | FMA = 1 |`.")


def test_llamacpp_draft_reads_the_tools_output_and_is_planned_only_where_the_tool_is_built(monkeypatch, tmp_path):
    """llama.cpp's draft-model speculative decoding runs its llama-speculative-simple tool (make install builds it):
    the row's text is what the tool printed after our prompt (its framing newlines dropped), a prompt it echoed
    differently is a one-line error, and the method is planned once per draft model at the peer K values, only
    where the tool exists. The tool itself on the real pair: notes/llamacpp.md and the llamacpp-peer run."""
    from reproduce.errors import ReproduceError
    from reproduce.runs import plan
    from reproduce.runs.config import read_config_data, resolve_config
    from reproduce.runs.llamacpp_peer import _generated_text, _tool_numbers

    prompt = "def f(x):\n    \"\"\"Double x.\"\"\"\n"
    assert _generated_text("\n\n" + prompt + "    return 2 * x\n\n\n\n", prompt) == "    return 2 * x"
    assert _generated_text("\n\n" + prompt + "\n\n\n\n\n\n", prompt) == "\n\n"  # its own newlines are kept
    with pytest.raises(ReproduceError) as error:
        _generated_text("\n\n" + prompt.rstrip() + "    return 2 * x\n\n\n\n", prompt)
    assert "\n" not in str(error.value) and "echoed a prompt other than ours" in str(error.value)
    # its timing lines (as 0.3.36's tool prints them); a log without them is a one-line error naming the fix
    log = "encoded   40 tokens in    0.512 seconds, speed:   78.1 t/s\ndecoded  128 tokens in    9.810 seconds, speed:"
    assert _tool_numbers(r"decoded\s+(\d+) tokens in\s+([\d.]+) seconds", log) == (128.0, 9.81)
    assert _tool_numbers(r"encoded\s+\d+ tokens in\s+([\d.]+) seconds", log) == (0.512,)
    with pytest.raises(ReproduceError) as error:
        _tool_numbers(r"decoded\s+(\d+) tokens in\s+([\d.]+) seconds", "main: error: failed to load model\n")
    assert "\n" not in str(error.value) and "make install" in str(error.value) and "failed to load" in str(error.value)

    monkeypatch.setattr(plan, "llamacpp_installed", lambda: True)
    data, _ = read_config_data("llamacpp-peer")
    config = resolve_config(data, "llamacpp-peer")
    monkeypatch.setattr(plan, "speculative_tool", lambda: None)
    assert "llamacpp_draft" not in {m.kind for m in plan.main_methods(config)}
    monkeypatch.setattr(plan, "speculative_tool", lambda: tmp_path / "llama-speculative-simple")
    drafts = [(m.draft, m.k) for m in plan.main_methods(config) if m.kind == "llamacpp_draft"]
    assert drafts == [("qwen-0.5b", 3)]  # the model draft only (not n-gram), at its K
