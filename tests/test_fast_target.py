"""FastLlamaLM (reproduce/engine/fast_lm.py) against the Hugging Face model it copies, and its batch invariance.

Method
------
1. Equivalence, fp32 mode. The same call sequences (prefill, multi-token calls, single-token calls, rollbacks,
   growth of the static cache past `max_len`) go to `CachedLM` over the Hugging Face model and to FastLlamaLM;
   the logits must agree to 1e-4 relative to their scale (tiny random Llama and the offline SmolLM2).
2. Cache semantics, every linear mode. Rollback then re-forward must equal, bitwise, a fresh object fed the kept
   prefix and the same tokens: stale entries past the cache position must never be read.
3. Decoding. Greedy `autoregressive_decode` with FastLlamaLM (fp32) emits CachedLM's tokens; in every mode the
   probe finds batch-invariant here, greedy and sampled `speculative_decode` reproduce `autoregressive_decode`
   over the same object token for token.
4. Batch invariance at the pair's width, no model file: a 2-layer model with the exact shapes of
   Qwen2.5-Coder-1.5B (hidden 1536, intermediate 8960, 12 heads, 2 KV heads, vocabulary 151,936), random weights.
   For every linear mode, calls of n = 2..9 tokens are compared bitwise with n single-token calls. It is a
   property of the CPU's kernels: a mode that is not invariant here is reported as an expected failure naming
   the CPU, after checking that `runtime: auto` does not pick it for a target; the mode auto does pick must be
   invariant. The int modes stay close to fp32 (logit error, argmax agreement).
5. Bad input: non-Llama models and unknown modes raise ReproduceError.
6. Qwen2 (Llama plus q/k/v biases, RoPE base 1e6, untied head): 1-3 on a tiny random Qwen2, with checks that
   dropping the biases or using Llama's RoPE base would fail; sliding-window Qwen2 configs are refused.
7. The offline pair (slow): fast-fp32 equals Hugging Face on the real 1.5B's first layers, and greedy SpS emits
   exactly greedy ArS's 128 tokens on two HumanEval prompts in the runtime auto picks at the default profile's K,
   for the 0.5B draft in int4 and int8 and for the target drafting for itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import types

import pytest
import torch

from reproduce.engine.decoding import autoregressive_decode, speculative_decode
from reproduce.engine.drafters import ModelDrafter, NgramDrafter, build_drafter
from reproduce.engine.fast_lm import FastLlamaLM
from reproduce.engine.linear import BF16_WEIGHT_MODES, LINEAR_MODES
from reproduce.engine.lm import CachedLM
from reproduce.engine.models import tiny_random_model
from reproduce.engine.probe import choose, probe_model
from reproduce.engine.runtime import build_lm, build_target, resolve_runtime
from reproduce.engine.sampling import SamplingParams
from reproduce import provenance
from reproduce.errors import ReproduceError
from reproduce.provenance import cpu_flags
from reproduce.runs.config import EXPERIMENTS_DIR, load_config
from reproduce.tasks import build_prompt_ids, load_examples

CPU_FLAGS = " ".join(sorted(cpu_flags() & set(provenance.CPU_FLAGS)))

# (tokens to forward, or ("rollback", length)): prefill, verification-sized calls, single tokens, rollbacks
CALLS = [[1, 5, 9, 2, 7, 3, 30, 11], [4, 6, 8], ("rollback", 9), [12, 13], [14], ("rollback", 8), [15, 16, 17, 18],
         [19], [20], ("rollback", 3), [21, 22, 23, 24, 25, 26, 27, 28, 29, 31]]


def run_calls(lm, calls) -> list[torch.Tensor]:
    lm.reset()
    outputs = []
    with torch.inference_mode():
        for call in calls:
            if isinstance(call, tuple):
                lm.rollback(call[1])
            else:
                outputs.append(lm.forward(list(call)))
    return outputs


def assert_close(expected: list[torch.Tensor], actual: list[torch.Tensor], rtol: float = 1e-4) -> None:
    assert len(expected) == len(actual)
    for want, got in zip(expected, actual):
        assert got.shape == want.shape and got.dtype == torch.float32
        scale = want.abs().max().item()
        assert (got - want).abs().max().item() <= rtol * scale, (got - want).abs().max().item()


@pytest.fixture(scope="module")
def tiny_llama():
    return tiny_random_model("llama", vocab_size=32, num_hidden_layers=2, seed=3).model


# int4 groups 32 inputs: tiny models for every mode are 64 wide
WIDE = dict(hidden_size=64, intermediate_size=128, initializer_range=0.05)


def test_fp32_matches_hugging_face_on_tiny_llama(tiny_llama, single_thread):
    reference = CachedLM(tiny_llama)
    expected = run_calls(reference, CALLS)
    # max_len=8 forces the static cache to grow twice during the sequence
    for max_len in (2048, 8):
        fast = FastLlamaLM.from_hf(tiny_llama, max_len=max_len, linear_mode="fp32")
        assert_close(expected, run_calls(fast, CALLS))
        assert fast.cache_tokens == reference.cache_tokens == [1, 5, 9, 21, 22, 23, 24, 25, 26, 27, 28, 29, 31]


def test_last_only_and_next_logits_match_cached_lm(tiny_llama, single_thread):
    reference, fast = CachedLM(tiny_llama, vocab_size=30), FastLlamaLM.from_hf(tiny_llama, vocab_size=30)
    for lm in (reference, fast):
        lm.reset()
    with torch.inference_mode():
        want, got = reference.forward([1, 2, 3], last_only=True), fast.forward([1, 2, 3], last_only=True)
        assert got.shape == (1, 30) and fast.vocab_size == 30
        assert_close([want], [got])
        for sequence in ([1, 2, 3, 4], [1, 2, 9, 9, 9], [7]):
            assert_close([reference.next_logits(sequence)], [fast.next_logits(sequence)])
            assert fast.cache_tokens == reference.cache_tokens


@pytest.mark.parametrize("architecture", ["llama", "qwen2"])
@pytest.mark.parametrize("mode", LINEAR_MODES)
def test_rollback_then_forward_equals_a_fresh_forward(architecture, mode, single_thread):
    model = tiny_random_model(architecture, vocab_size=32, num_hidden_layers=2, seed=3, **WIDE).model
    used = FastLlamaLM.from_hf(model, linear_mode=mode)
    after_rollback = run_calls(used, [[1, 2, 3], [4, 5, 6, 7, 8, 9], [10], ("rollback", 3), [11, 12, 13], [14]])
    fresh = run_calls(FastLlamaLM.from_hf(model, linear_mode=mode), [[1, 2, 3], [11, 12, 13], [14]])
    for want, got in zip(fresh[1:], after_rollback[3:]):
        assert torch.equal(want, got)


def test_the_target_drafting_for_itself_adopts_its_prefill_bitwise(tiny_llama, single_thread):
    """A drafter over the target's own weights starts from the target's prefilled cache (no second prefill): the
    logits it then gives are bitwise those of prefilling itself; another model's cache is never taken."""
    target = FastLlamaLM.from_hf(tiny_llama, linear_mode="bf16")
    prompt = [3, 1, 4, 1, 5, 9, 2, 6]
    target.reset()
    target.forward(prompt[:-1], last_only=True)
    adopted, computed = target.fresh(), target.fresh()
    assert not adopted.adopt_cache(FastLlamaLM.from_hf(tiny_llama, linear_mode="bf16")) and not adopted.cache_tokens
    assert adopted.adopt_cache(target) and adopted.cache_tokens == prompt[:-1]
    assert torch.equal(adopted.next_logits(prompt + [7]), computed.next_logits(prompt + [7]))
    trace = speculative_decode(target, ModelDrafter(target.fresh()), prompt, 3, 12, SamplingParams(temperature=0.0),
                               torch.Generator().manual_seed(0))
    assert trace.acceptance_rate == 1.0


def test_greedy_autoregressive_decode_matches_cached_lm(tiny_llama, single_thread):
    params = SamplingParams(temperature=0.0)
    for prompt in ([1, 2, 3], [7], [4, 4, 4, 4, 4, 9]):
        expected = autoregressive_decode(CachedLM(tiny_llama), prompt, 20, params, torch.Generator().manual_seed(0))
        fast = FastLlamaLM.from_hf(tiny_llama, linear_mode="fp32")
        actual = autoregressive_decode(fast, prompt, 20, params, torch.Generator().manual_seed(0))
        assert actual.tokens == expected.tokens


OPS = pytest.mark.parametrize("fused", [True, False], ids=["fused-ops", "torch-ops"])


def use_ops(fused: bool, monkeypatch) -> None:
    """FastLlamaLMs built after this run the small ops between the GEMMs fused (reproduce.engine.layer_ops) or in
    torch's ops (what a machine without a compiler runs): each path is checked bitwise on its own."""
    from reproduce.engine import layer_ops

    if fused and not layer_ops.available():
        pytest.skip(f"the fused layer ops cannot be built here ({layer_ops._build()}): their path is left unchecked")
    monkeypatch.setattr(layer_ops, "available", lambda: fused)


@OPS
@pytest.mark.parametrize("architecture", ["llama", "qwen2"])
@pytest.mark.parametrize("mode", ["bf16", "int8", "int4"])
def test_speculative_decode_reproduces_ars_in_batch_invariant_modes(architecture, mode, fused, single_thread,
                                                                    monkeypatch):
    """Greedy SpS emits greedy ArS's tokens over the same target, for two drafters and several K; and every
    verification size the row-by-row attention covers (2..16) returns bitwise the single-token logits ArS sees."""
    use_ops(fused, monkeypatch)
    model = tiny_random_model(architecture, vocab_size=32, num_hidden_layers=2, seed=3, **WIDE).model
    probe = next(p for p in probe_model(model.config, 32) if p.mode == mode)
    if not probe.batch_invariant:
        # the probe checks the GEMMs and the whole forward: on the AVX-512 host of session 16, bf16 at this tiny llama's
        # shapes (hidden 64) gives row 7 of an 8-row call ~1e-5 off the single-row call, in torch's ops and the fused
        # ones alike, while each GEMM alone is invariant (not root-caused; the pair's shapes are invariant)
        pytest.xfail(f"{mode} is not batch-invariant at these shapes on this CPU ({CPU_FLAGS}; the probe's check): "
                     f"SpS == ArS unchecked in {mode}")
    target = FastLlamaLM.from_hf(model, linear_mode=mode)
    params = SamplingParams(temperature=0.0)
    prompt = [3, 1, 4, 1, 5]
    baseline = autoregressive_decode(target, prompt, 24, params, torch.Generator().manual_seed(1))
    draft_model = tiny_random_model(architecture, vocab_size=32, seed=4, **WIDE).model
    for drafter in (NgramDrafter(32), ModelDrafter(FastLlamaLM.from_hf(draft_model, linear_mode="int8"))):
        for k in (1, 2, 4):
            trace = speculative_decode(target, drafter, prompt, k, 24, params, torch.Generator().manual_seed(1))
            assert trace.tokens == baseline.tokens
    sequence = prompt + baseline.tokens
    single = run_calls(target, [sequence[:5]] + [[token] for token in sequence[5:21]])
    for n in range(2, 17):
        assert torch.equal(torch.cat(single[1 : n + 1]), run_calls(target, [sequence[:5], sequence[5 : 5 + n]])[1])


@pytest.fixture(scope="module")
def pair_shaped_model():
    """Two decoder layers with the exact shapes of Qwen2.5-Coder-1.5B-Instruct, random bf16 weights (~1.1 GB)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model("qwen2", vocab_size=151936, hidden_size=1536, intermediate_size=8960,
                                  num_hidden_layers=2, num_attention_heads=12, num_key_value_heads=2,
                                  tie_word_embeddings=False, rope_parameters={"rope_type": "default", "rope_theta": 1e6},
                                  initializer_range=0.02)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).eval()


PAIR_CONTEXT, PAIR_SCORED = [11, 7, 300, 4000, 151000], [5, 99, 1234, 77, 150000, 8, 42, 6000, 3]


@pytest.fixture(scope="module")
def pair_shaped_fp32_logits(pair_shaped_model):
    lm = FastLlamaLM.from_hf(pair_shaped_model, linear_mode="fp32")
    return torch.cat(run_calls(lm, [PAIR_CONTEXT] + [[token] for token in PAIR_SCORED])[1:])


@OPS
@pytest.mark.parametrize("mode", LINEAR_MODES)
def test_batch_invariance_at_the_pairs_width(pair_shaped_model, pair_shaped_fp32_logits, mode, fused, monkeypatch):
    """Calls of n = 2..9 tokens return bitwise the logits of n single-token calls, in `mode`, at hidden 1536."""
    use_ops(fused, monkeypatch)
    lm = FastLlamaLM.from_hf(pair_shaped_model, linear_mode=mode)
    single = torch.cat(run_calls(lm, [PAIR_CONTEXT] + [[token] for token in PAIR_SCORED])[1:])
    differs = next((n for n in range(2, 10) if not torch.equal(run_calls(lm, [PAIR_CONTEXT, PAIR_SCORED[:n]])[1],
                                                                single[:n])), None)
    auto = resolve_runtime("auto", pair_shaped_model, "target", 4)
    if differs:
        assert auto != f"fast-{mode}", f"auto picked {mode} for a target although it is not batch-invariant here"
        pytest.xfail(f"{mode} is not batch-invariant on this CPU ({CPU_FLAGS}): a call of {differs} tokens differs "
                     f"from single-token calls; checked only that auto ({auto}) does not pick it for a target")
    # random weights give near-uniform logits, so closeness is checked in scale only (argmax on real models below);
    # Gaussian weights are 4 bits' worst case (no grid): int4 measured 0.25 of the scale, int8 and bf16 under 0.05,
    # 3 bits (w3a8) 0.55
    bound = 0.7 if mode == "w3a8" else 0.35
    assert (single - pair_shaped_fp32_logits).abs().max() < bound * pair_shaped_fp32_logits.abs().max()


def test_the_choice_rule_of_auto():
    """choose(): a target gets the batch-invariant mode with the least expected SpS time per token at its best K
    (Leviathan's formula over t(n)), else the fastest (with a warning); the paper's regime the flattest invariant
    verification among the modes that leave the draft at c <= 0.15, at the K of those offered with the most
    predicted speedup over ArS in that mode; a draft the fastest single token."""
    from reproduce.engine.probe import ModeProbe

    def probe(mode, curve, invariant=True):
        return ModeProbe(mode, dict(enumerate(curve, start=1)), invariant)

    probes = [probe("int4", [10, 14, 15, 16, 30]), probe("int8", [20, 20, 21, 22, 40]),
              probe("bf16", [40, 41, 42, 43, 44]), probe("fp32", [5, 50, 60, 70, 80], invariant=False)]
    assert choose(probes, "target", 3).runtime == "fast-int4"  # t(4) = 16 beats int8's 22 and bf16's 43
    assert choose(probes, "target", 4).runtime == "fast-int4"  # t(5) = 30 < 40 < 44: speed, not flatness, decides
    # with bf16 a little faster at 5 rows, K = 4 alone goes to bf16, but offered K = 3 too, int4 at K = 3 wins
    probes[2] = probe("bf16", [40, 41, 42, 43, 29])
    assert choose(probes, "target", 4).runtime == "fast-bf16"
    assert choose(probes, "target", 4, k_options=(3, 4), draft_ms=5.0).runtime == "fast-int4"
    assert choose(probes, "flattest", 4).runtime == "fast-bf16"  # t(5)/t(1) = 0.7: the paper's regime
    assert choose(probes, "flattest", 2).runtime == "fast-int8"  # 1.05 ties bf16's 1.05 to 0.1; int8 is faster
    assert choose(probes, "draft", 4).runtime == "fast-fp32"  # a draft needs no invariance
    # the paper's regime leaves the draft at c <= 0.15 of t(1): a 4 ms draft rules int4 (10 ms) and int8 (20 ms) out
    # at K = 2 (int8 would tie bf16 and win on speed), so bf16 (40 ms, c = 0.10); a 7 ms draft is dear next to all
    assert choose(probes, "flattest", 2, draft_ms=4.0).runtime == "fast-bf16"
    assert choose(probes, "flattest", 2, draft_ms=2.0).runtime == "fast-int8"  # c = 0.10 at int8
    dear = choose(probes, "flattest", 2, draft_ms=7.0)
    assert dear.runtime == "fast-int8" and "no mode leaves it at c <= 0.15" in dear.reason
    # its K, by Leviathan's formula in the chosen mode: bf16, flat to 5 rows, gains up to K = 4 (3.63x predicted);
    # a curve that jumps after 3 rows stops at K = 2
    paper = choose(probes, "flattest", 4, k_options=(1, 2, 3, 4), draft_ms=2.0)
    assert (paper.runtime, paper.k) == ("fast-bf16", 4) and "K=4, t(5)/t(1) = 0.72, predicted 3.63x" in paper.reason
    steep = probe("int8", [20, 21, 22, 40, 60])
    assert choose([steep], "flattest", 4, k_options=(1, 2, 3, 4), draft_ms=2.0).k == 2  # 1.88x; K = 3: 1.28x
    # a higher acceptance makes a longer draft pay: with a 4 ms draft on this curve K = 2 at alpha 0.5, K = 4 at 0.95
    sloped = probe("bf16", [40, 41, 42, 50, 52])
    assert choose([sloped], "flattest", 4, k_options=(1, 2, 3, 4), draft_ms=4.0, alpha=0.5).k == 2
    assert choose([sloped], "flattest", 4, k_options=(1, 2, 3, 4), draft_ms=4.0, alpha=0.95).k == 4
    assert choose(probes, "target", 4, k_options=(3, 4), draft_ms=5.0).k == 3  # the target's choice says its K too
    # flatness within 5% ties, and the faster single token wins: a probe on torch's AVX2 paths read w16a32 and int8
    # at 2.51 and 2.55 expected tokens per t(1) of verification (K = 3, alpha 0.9); int8 clearly flatter wins
    w16a32 = probe("w16a32", [155, 156, 182, 212, 274])
    tied = choose([w16a32, probe("int8", [193, 211, 231, 260, 395])], "flattest", 4, k_options=(1, 2, 3, 4),
                  draft_ms=22.0, alpha=0.9)
    assert (tied.runtime, tied.k) == ("fast-w16a32", 3)
    assert choose([w16a32, probe("int8", [193, 195, 198, 200, 205])], "flattest", 4, k_options=(1, 2, 3, 4),
                  draft_ms=22.0, alpha=0.9).runtime == "fast-int8"
    unusable = ModeProbe("int4", {}, False, ok=False, note="int4 needs inputs in multiples of 32")
    assert choose([unusable, probes[3]], "target", 1).reason.startswith("no mode is batch-invariant")
    with pytest.raises(ReproduceError, match="K <= 8"):  # the probe measures up to 9 rows: one line, not a KeyError
        choose(probes, "target", 9)


def test_the_probe_cache_is_keyed_on_the_kernel_environment(tmp_path, monkeypatch):
    """A run on torch's AVX2 paths (ATEN_CPU_CAPABILITY=avx2 ...) must probe again, not read the native probe."""
    from reproduce.engine import probe as probe_module

    monkeypatch.setenv("REPRODUCE_CACHE", str(tmp_path))
    calls = []
    monkeypatch.setattr(probe_module, "probe_mode", lambda mode, *a: calls.append(mode) or
                        probe_module.ModeProbe(mode, {1: 1.0}, True))
    config = tiny_random_model("llama", vocab_size=32).model.config
    for capability in (None, None, "avx2"):
        if capability:
            monkeypatch.setenv("ATEN_CPU_CAPABILITY", capability)
        probe_module.probe_model(config, 32, modes=("int8",))
    assert calls == ["int8", "int8"]  # the second native call read the cache; the AVX2 one probed afresh


@pytest.mark.parametrize("fused", [True, False], ids=["fused-ops", "torch-ops"])
def test_the_probe_times_the_whole_forward_not_the_gemms_alone(monkeypatch, fused):
    """llama.cpp's probe times a whole forward and `choose` compares it with the fast modes', so theirs must be a
    whole forward too: attention made 2 ms dearer a layer call raises a probed t(n) by ~2 ms a layer of the model (8
    here, 4 probed and scaled). A GEMMs-only probe (probe version 2) would not move, so this fails there. Both ways
    of computing the small ops are checked: the fused C++ ones (one attention call a layer) and torch's."""
    from reproduce.engine import fast_lm, layer_ops, probe as probe_module

    if fused and not layer_ops.available():
        pytest.skip(f"the fused layer ops cannot be built here ({layer_ops._build()}): leaves unchecked that the probe "
                    "times their attention")
    monkeypatch.setattr(layer_ops, "available", lambda: fused)
    config = tiny_random_model("qwen2", vocab_size=64, num_hidden_layers=8).model.config
    base = probe_module.probe_mode("int8", config, 64)
    if fused:
        real = layer_ops.kernel()

        class Slower:  # the compiled module with a dearer attention
            def __getattr__(self, name):
                return getattr(real, name)

            def attention(self, *args):
                time.sleep(0.002)
                return real.attention(*args)

        monkeypatch.setattr(layer_ops, "kernel", Slower)
        calls_a_layer = lambda rows: 1  # noqa: E731 - one attention call a layer, whatever the rows
    else:
        attend_one = fast_lm.attend_one

        def slower(*args):
            time.sleep(0.002)
            return attend_one(*args)

        monkeypatch.setattr(fast_lm, "attend_one", slower)
        calls_a_layer = lambda rows: rows  # noqa: E731 - one a row (row by row) for verification calls
    dearer = probe_module.probe_mode("int8", config, 64)
    assert base.ok and dearer.ok and base.batch_invariant
    for rows in (1, 2, 9):
        added = dearer.ms[rows] - base.ms[rows]
        calls = calls_a_layer(rows)
        assert 0.8 * 2 * 8 * calls <= added <= 2 * 2 * 8 * calls + 10, (rows, base.ms[rows], dearer.ms[rows])


def test_a_restricted_draft_is_probed_with_the_head_it_runs(monkeypatch):
    """The draft's probe is its c's prior (benchmarks/pair prints it beside the loop's): a draft with a restricted
    head is probed on that head's rows, not on the whole vocabulary's."""
    from reproduce.engine import drafters

    loaded = tiny_random_model("llama", vocab_size=64)
    asked = []

    def resolve(runtime, model, role, vocab_size=None, name=""):
        asked.append((role, vocab_size))
        return "fast-int8", None

    monkeypatch.setattr(drafters, "resolve_choice", resolve)
    kept = torch.arange(0, 64, 4)
    for head in (None, kept):
        drafters.build_drafter("tiny-draft", loaded, load_model=lambda name, dtype: loaded,
                               make_lm=lambda *a: types.SimpleNamespace(fresh=lambda: None), kept=head)
    assert asked == [("draft", 64), ("draft", 16)]


@pytest.mark.parametrize("hidden", [64, 576, 896, 1536, 2048, 3584, 4096])
def test_rms_norm_is_the_five_op_form_bitwise_and_each_row_alone(hidden):
    """fast_lm.rms_norm is torch's fused kernel: bitwise what Hugging Face's five ops give (a torch upgrade that
    changes that changes every fast runtime's numerics), and row i of an n-row call is the one-row call's."""
    from reproduce.engine.fast_lm import rms_norm

    generator = torch.Generator().manual_seed(hidden)
    x = torch.randn(17, hidden, generator=generator) * torch.rand(17, 1, generator=generator) * 50
    weight, eps = torch.randn(hidden, generator=generator), 1e-6
    rows = rms_norm(x, weight, eps)
    assert torch.equal(rows, weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)))
    assert all(torch.equal(rms_norm(x[i : i + 1], weight, eps)[0], rows[i]) for i in range(len(x)))


def test_only_a_quiet_probe_is_cached_and_a_busy_one_is_taken_again(tmp_path, monkeypatch, capfd):
    """The waiting clock is faked: a mode probed while it reads 'quiet' is cached; one that reads 'busy' twice is
    taken again once, used for the run (asked again, it serves without a new probe), not cached, and named in a
    warning."""
    from reproduce.engine import probe as probe_module

    monkeypatch.setenv("REPRODUCE_CACHE", str(tmp_path))
    waits = {"busy": False, "clock": 0.0}

    def fake_wait():  # each read advances the wait by what a probe of ~1 ms on its threads would have waited
        waits["clock"] += 10.0 if waits["busy"] else 0.0
        return waits["clock"]

    monkeypatch.setattr(probe_module, "runqueue_wait_seconds", fake_wait)
    calls = []
    monkeypatch.setattr(probe_module, "probe_mode", lambda mode, *a: calls.append(mode) or
                        probe_module.ModeProbe(mode, {1: 1.0}, True))
    config = tiny_random_model("llama", vocab_size=32).model.config

    def cached():
        return sorted((tmp_path / "probes").glob("*.json")) if (tmp_path / "probes").exists() else []

    quiet = probe_module.probe_model(config, 32, modes=("int8",))
    assert quiet[0].wait_share == 0 and len(cached()) == 1 and calls == ["int8"]
    assert "waited for a CPU" not in capfd.readouterr().err
    waits["busy"] = True
    busy = probe_module.probe_model(config, 32, modes=("int4",))  # another key: not read from the cache
    assert calls == ["int8", "int4", "int4"] and busy[0].wait_share > probe_module.BUSY_WAIT_SHARE
    assert len(cached()) == 1  # the busy probe was not written
    assert "probe of int4" in capfd.readouterr().err
    # asked again in the same process (a draft's cost, then the draft), the busy probe serves: not taken a third time
    assert probe_module.probe_model(config, 32, modes=("int4",)) is busy and calls == ["int8", "int4", "int4"]


def _spin_gemms(seconds: float) -> None:
    """Keep torch's threads busy the way a probe does."""
    weight, x = torch.randn(512, 512), torch.randn(64, 512)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        weight @ x.T


@pytest.mark.skipif(provenance.runqueue_wait_seconds() is None,
                    reason="this kernel reports no runqueue wait (/proc/self/task/*/schedstat): left unchecked that the "
                           "real clock sees another process (every probe counts as quiet here)")
def test_the_wait_clock_sees_busy_processes():
    """The real clock: with two busy-looping processes per CPU we may use, our threads wait for a CPU well over
    BUSY_WAIT_SHARE of their time whatever the core count (the quiet direction is the fake-clock test's)."""
    from reproduce.engine import probe as probe_module

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2 * cpus)]
    try:
        time.sleep(0.2)
        probe, quiet = probe_module.measure_quietly(
            lambda: _spin_gemms(0.5) or probe_module.ModeProbe("spin", {1: 1.0}, True), "a test", torch.get_num_threads())
    finally:
        for process in busy:
            process.kill()
            process.wait()
    assert probe.wait_share > probe_module.BUSY_WAIT_SHARE and not quiet


def test_rejects_other_architectures_and_modes(tiny_llama):
    with pytest.raises(ReproduceError, match="Llama"):
        FastLlamaLM.from_hf(tiny_random_model("gpt2", vocab_size=32).model)
    with pytest.raises(ReproduceError, match="linear_mode"):
        FastLlamaLM.from_hf(tiny_llama, linear_mode="int2")
    with pytest.raises(ReproduceError, match="fast-int8"):  # int4 groups 32 inputs; this model is 16 wide
        FastLlamaLM.from_hf(tiny_llama, linear_mode="int4")


@pytest.fixture(scope="module")
def smollm2_context(smollm2):
    text = ("The committee said on Tuesday that the new bridge would open next spring, two years later than "
            "planned, because of rising costs and a shortage of steel.")
    return smollm2.tokenizer.encode(text)


def test_fp32_matches_hugging_face_on_smollm2(smollm2, smollm2_context):
    ids = smollm2_context
    calls = [ids[:20], ids[20:25], ("rollback", 22), ids[22:23], ids[23:26]]
    expected = run_calls(CachedLM(smollm2.model, smollm2.vocab_size), calls)
    assert_close(expected, run_calls(FastLlamaLM.from_hf(smollm2.model, smollm2.vocab_size), calls))


# total variation from fp32 at T=1 allowed per mode (measured on this text: see the assertion messages)
SMOLLM2_MAX_TV = {"bf16": 0.05, "int8": 0.05, "int4": 0.2}


@pytest.mark.parametrize("mode", ["bf16", "int8", "int4"])
def test_batch_invariant_and_close_to_fp32_on_smollm2(smollm2, smollm2_context, mode):
    ids = smollm2_context
    context, scored = ids[:-10], ids[-10:-1]
    lm = FastLlamaLM.from_hf(smollm2.model, smollm2.vocab_size, linear_mode=mode)
    single = torch.cat(run_calls(lm, [context] + [[token] for token in scored])[1:])
    if next(p for p in probe_model(smollm2.model.config, smollm2.vocab_size) if p.mode == mode).batch_invariant:
        for n in range(2, len(scored) + 1):
            batched = run_calls(lm, [context, scored[:n]])[1]
            assert torch.equal(batched, single[:n]), f"{n}-token call differs from single-token calls"
    fp32 = torch.cat(run_calls(CachedLM(smollm2.model, smollm2.vocab_size), [context, scored])[1:])
    total_variation = 0.5 * (fp32.softmax(-1) - single.softmax(-1)).abs().sum(-1)
    assert total_variation.max().item() < SMOLLM2_MAX_TV[mode], total_variation.max().item()
    assert (fp32.argmax(-1) == single.argmax(-1)).float().mean().item() >= 0.75


# ---- Qwen2: Llama plus q/k/v biases, its own RoPE base, an untied head ------------------------------------------


@pytest.fixture(scope="module")
def tiny_qwen2():
    return tiny_random_model("qwen2", vocab_size=32, num_hidden_layers=2, seed=3).model


def test_fp32_matches_hugging_face_on_tiny_qwen2(tiny_qwen2, single_thread):
    attn = tiny_qwen2.model.layers[0].self_attn
    assert attn.q_proj.bias.abs().sum() > 0 and tiny_qwen2.config.rope_parameters["rope_theta"] == 1e6
    assert not tiny_qwen2.config.tie_word_embeddings
    expected = run_calls(CachedLM(tiny_qwen2), CALLS)
    for max_len in (2048, 8):
        assert_close(expected, run_calls(FastLlamaLM.from_hf(tiny_qwen2, max_len=max_len, linear_mode="fp32"), CALLS))
    # the comparison has power: without the biases, or with Llama's RoPE base, the logits are far off
    no_bias, llama_rope = (FastLlamaLM.from_hf(tiny_qwen2, linear_mode="fp32") for _ in range(2))
    for weights in no_bias.layers:
        weights.qkv_bias = None
    llama_rope.rope_theta = 10000.0
    llama_rope._allocate(llama_rope.max_len)
    for wrong in (no_bias, llama_rope):
        with pytest.raises(AssertionError):
            assert_close(expected, run_calls(wrong, CALLS), rtol=1e-2)


def test_qwen2_gets_the_fast_runtime_unless_it_uses_a_sliding_window(tiny_qwen2):
    assert resolve_runtime("auto", tiny_qwen2).startswith("fast-")
    sliding = tiny_random_model("qwen2", vocab_size=32, use_sliding_window=True, sliding_window=4,
                                max_window_layers=0).model
    with pytest.raises(ReproduceError, match="sliding-window"):
        FastLlamaLM.from_hf(sliding)


QWEN_TARGET, QWEN_DRAFT = "qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-0.5b-instruct"


@pytest.fixture(scope="module")
def qwen_coder_target():
    """The offline Qwen2.5-Coder-1.5B-Instruct, loaded in bf16 (3.5 GB: the first load assembles and converts it,
    ~2.5 min, later ones seconds); skipped where its part wheels are not installed."""
    from reproduce.engine.gguf_parts import part_paths
    from reproduce.engine.models import OFFLINE_ALIASES, load_model

    for alias in (QWEN_TARGET, QWEN_DRAFT):
        try:
            part_paths(OFFLINE_ALIASES[alias])
        except ReproduceError as missing:
            pytest.skip(f"{alias} is not installed here ({missing})")
    return load_model(QWEN_TARGET, torch.bfloat16)


@pytest.mark.slow
def test_qwen2_5_coder_fast_fp32_equals_hugging_face_on_its_first_layers(qwen_coder_target):
    """fast-fp32 computes Hugging Face's forward on the real weights: checked on a copy cut to the first two
    layers (the full fp32 copy would be 7 GB), in fp32 on both sides."""
    import copy

    model = copy.deepcopy(qwen_coder_target.model)
    model.model.layers = model.model.layers[:2]
    model.config.num_hidden_layers = 2
    model = model.float()
    ids = list(range(1000, 1020))
    calls = [ids[:10], ids[10:15], ("rollback", 12), ids[12:13], ids[13:20]]
    expected = run_calls(CachedLM(model, qwen_coder_target.vocab_size), calls)
    assert_close(expected, run_calls(FastLlamaLM.from_hf(model, qwen_coder_target.vocab_size), calls))


@pytest.fixture
def profile_threads():
    """The default profile's thread count for the real pair: the module-scoped single_thread fixture of the tiny-model
    tests above stays active until the module ends, and one thread doubles this test's time (and probes anew)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(load_config(EXPERIMENTS_DIR / "default.yaml").threads)
    yield
    torch.set_num_threads(previous)


@pytest.mark.slow
def test_qwen2_5_coder_greedy_speculative_decoding_equals_ars(qwen_coder_target, profile_threads, record_property):
    """Greedy SpS emits exactly greedy ArS's 128 tokens on a HumanEval prompt (chat format), in the target runtime
    `auto` picks on this CPU at the default profile's K (2), for the 0.5B draft in w4a8 (the default's) and int8
    (coarser: rejections elsewhere) and for the target drafting for itself (every verification K + 1 rows): a
    single flipped token in any of their ~150 verification calls would show here. (One prompt and two draft
    numerics: the suite's time. The default run checks every one of its prompts, and its committed report's
    count is tested in test_report.)"""
    target = qwen_coder_target
    k = load_config(EXPERIMENTS_DIR / "default.yaml").k_values[0]
    prompts = [build_prompt_ids(example, target.tokenizer, 1000) for example in load_examples("humaneval", [11])]
    runtime, target_lm = build_target(target, "auto", k)
    record_property("target_runtime", runtime)
    from reproduce.engine.models import load_model

    draft_model = load_model(QWEN_DRAFT, torch.bfloat16)
    drafters = {"target": ModelDrafter(target_lm.fresh(), name="target")}
    for mode in ("w4a8", "int8"):  # a draft's numerics change acceptance only: bf16 (slow on AVX2) adds nothing
        drafters[f"0.5B-{mode}"] = build_drafter(QWEN_DRAFT, target, runtime, f"fast-{mode}",
                                                 load_model=lambda *_: draft_model).drafter
    params = SamplingParams(temperature=0.0)
    for index, prompt in enumerate(prompts):
        ars = autoregressive_decode(target_lm, prompt, 128, params, torch.Generator().manual_seed(0))
        assert len(ars.tokens) == 128  # no EOS: every position is compared
        for name, drafter in drafters.items():
            sps = speculative_decode(target_lm, drafter, prompt, k, 128, params, torch.Generator().manual_seed(0))
            assert sps.tokens == ars.tokens, f"{name} on prompt {index}: first difference at " \
                f"{next(i for i, (a, b) in enumerate(zip(sps.tokens, ars.tokens)) if a != b)}"
            assert sps.accepted > 0
            record_property(f"acceptance_{name}_{index}", round(sps.acceptance_rate, 3))


@pytest.mark.parametrize("architecture", ["llama", "qwen2"])
def test_int8_draft_numerics_stay_close_to_fp32(architecture):
    """Weight-only int8 (a draft's cheaper numerics): per-row scales keep the logits within a few percent of the
    fp32 forward, and fresh() gives an LM over the same int8 weights with a cache of its own."""
    model = tiny_random_model(architecture, vocab_size=32, seed=1, initializer_range=0.05).model
    ids = [1, 2, 3, 4, 5]
    reference = build_lm(model, 32, "fast-fp32").forward(ids)
    quantized = build_lm(model, 32, "fast-int8")
    logits = quantized.forward(ids)
    assert quantized.layers[0].qkv.weight.dtype == torch.int8
    assert (logits - reference).abs().max() < 0.05 * reference.abs().max()
    assert not torch.equal(logits, reference)  # it is a different (cheaper) forward, not the fp32 one
    copy = quantized.fresh()
    assert copy.layers is quantized.layers and copy.keys is not quantized.keys
    copy.reset()
    assert torch.equal(copy.forward(ids), logits)


@pytest.mark.parametrize("architecture", ["llama", "qwen2"])
@pytest.mark.parametrize("mode", BF16_WEIGHT_MODES)
def test_bf16_runtime_shares_the_weights_of_a_bf16_hugging_face_model(architecture, mode, single_thread):
    """The HF model kept for the peers points into the fast runtime's fused bf16 tensors (the bf16 mode's and the
    w16a32 kernel's, which reads the same layout): one copy in memory, and its own forward is unchanged (the views
    hold the very same values)."""
    model = tiny_random_model(architecture, vocab_size=32, seed=2, num_hidden_layers=2).model.to(torch.bfloat16)
    before = CachedLM(model).forward([1, 2, 3, 4])
    lm = FastLlamaLM.from_hf(model, linear_mode=mode)
    attn = model.model.layers[0].self_attn
    fused = lm.layers[0].qkv.weight
    assert attn.k_proj.weight.untyped_storage().data_ptr() == fused.untyped_storage().data_ptr()
    assert model.model.layers[1].mlp.up_proj.weight.untyped_storage().data_ptr() == \
        lm.layers[1].gate_up.weight.untyped_storage().data_ptr()
    assert torch.equal(CachedLM(model).forward([1, 2, 3, 4]), before)
    # a float32 model keeps weights of its own: bf16 views would change its numerics
    fp32_model = tiny_random_model(architecture, vocab_size=32, seed=2).model
    FastLlamaLM.from_hf(fp32_model, linear_mode=mode)
    assert fp32_model.model.layers[0].self_attn.q_proj.weight.dtype == torch.float32


PAGE_OUT_SCRIPT = """
import json, re, sys, torch
from reproduce.engine.fast_lm import FastLlamaLM
from reproduce.engine.models import load_model, page_out_model_files, populate_model_files
path = sys.argv[1]
torch.set_num_threads(1)
lm = FastLlamaLM.from_hf(load_model(path, torch.bfloat16).model, linear_mode="bf16")
before = lm.forward([1, 2, 3, 4, 5])

def resident_kb():
    total, ours = 0, False
    for line in open("/proc/self/smaps"):
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            ours = path in line
        elif ours and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total

out = {"mapped": resident_kb(), "advised": page_out_model_files()}
out["after_page_out"] = resident_kb()
lm.reset()
out["same_logits"] = bool(torch.equal(lm.forward([1, 2, 3, 4, 5]), before))
page_out_model_files()
out["out_again"] = resident_kb()
out["populated"] = populate_model_files((".safetensors",))
out["after_populate"] = resident_kb()
print(json.dumps(out))
"""


def test_paging_out_the_model_files_changes_no_logit_and_frees_their_pages(tmp_path):
    """models.page_out_model_files (the pool calls it once the fast runtime has its copies): a tiny Qwen2 saved as
    safetensors and loaded from the file, in bf16 (its unfused projections and head are still the file's pages);
    after the page-out, the file's resident pages are gone and a fresh forward gives bitwise the logits of before
    (the pages are read again); populate_model_files (the runner's, before llama.cpp rows) maps them back. In a
    fresh process: in this one, earlier tests changed how much of a newly loaded file stayed mapped (8 kB in a full
    CI run). Where madvise(MADV_PAGEOUT) or MADV_POPULATE_READ is missing (not Linux, kernels before 5.4 / 5.14)
    the skip says what is then unchecked; the unchanged logits are still checked."""
    import json
    import subprocess
    import sys

    tiny_random_model("qwen2").model.to(torch.bfloat16).save_pretrained(tmp_path / "tiny")  # mapped as stored
    os.sync()  # just written, its pages are dirty until written back, and MADV_PAGEOUT skips dirty pages
    done = subprocess.run([sys.executable, "-c", PAGE_OUT_SCRIPT, str(tmp_path / "tiny")], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["same_logits"]
    if result["advised"] == 0:
        pytest.skip("madvise(MADV_PAGEOUT) unavailable here: that the model files' pages are freed (and mapped back "
                    "by populate_model_files) is unchecked")
    assert result["mapped"] > 0 and result["after_page_out"] < result["mapped"], result
    if result["populated"] == 0:
        pytest.skip("madvise(MADV_POPULATE_READ) unavailable (Linux < 5.14): mapping pages back before timing is unchecked")
    # back to at least what the forward had mapped (a second page-out may leave the few pages of a tiny file in)
    assert result["after_populate"] >= result["mapped"], result
