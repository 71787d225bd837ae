"""Which linear mode a model runs in on this CPU: a short probe of the model's own GEMM shapes, cached per CPU.

The paper's regime needs a target whose verification is *flat* (scoring K+1 tokens costs about one) and
*batch-invariant* (row i of an n-token call bitwise equal to a single-token call, so greedy SpS emits exactly ArS's
tokens). Both are properties of the CPU's GEMM kernels, which differ between AVX2 and AVX512-BF16 machines
(notes/runtimes.md), so `runtime: auto` measures them instead of guessing from flags:

- `probe_mode` times, with random weights of the model's shapes (PROBE_LAYERS decoder layers and the head), the
  fast runtime's whole forward (FastLlamaLM: norms, RoPE, attention over PROBE_CONTEXT cached positions, the
  GEMMs) for n = 1..MAX_ROWS rows, the layers scaled to the model's depth and the head to its vocabulary, and checks
  batch invariance for n = 2..MAX_ROWS bitwise: every GEMM's, and the whole forward's (what the ops between the GEMMs,
  fused or torch's, add to them). A whole forward, because llama.cpp's probe times one
  (on the real GGUF) and `choose` compares the two: GEMMs alone read ~57% of our int4 target's step in the loop;
  the whole forward, which this now times, read ~93% for llama.cpp's (notes/runtimes.md);
- `choose` (pure) picks, for a target verifying K drafts, the batch-invariant mode with the least expected SpS
  time per token (Leviathan's formula over the probe's t(n) and the draft's cost where known); for the paper's
  regime the flattest batch-invariant verification among the modes that leave the draft at c <= PAPER_REGIME_MAX_C,
  at the K with the most predicted speedup over ArS in that mode (the same formula);
  for a draft, the fastest single-token mode. Where llama-cpp-python is installed and the model came
  from a GGUF, reproduce.engine.llamacpp_probe adds the llama.cpp runtime, measured on the real model, to the
  candidates (for a target only at the K where it is batch-invariant).

Results are cached in $REPRODUCE_CACHE/probes/, keyed by the CPU, torch, the thread count, the environment
variables that pick torch's kernels (KERNEL_ENV: a run on torch's AVX2 paths must not read the native probe) and
the shapes. Only a quiet probe is cached: `measure_quietly` times how long the probe's threads waited for a CPU
(another process running), retakes a probe that waited too long, and one still taken on a busy machine serves
this run alone, with a warning (one taken beside another job read 10-35x the quiet t(1), and its cached choice
outlived the job: notes/runtimes.md).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass

import torch

from reproduce.catalogue import LINEAR_MODES, NAMED_ONLY_MODES
from reproduce.engine import layer_ops, w4a8, w16a32
from reproduce.engine.fast_lm import FastLlamaLM, LayerWeights
from reproduce.engine.linear import make_linear
from reproduce.engine.timing import time_rows
from reproduce.errors import ReproduceError
from reproduce.offline import cache_dir, write_atomically
from reproduce.provenance import cpu_key, runqueue_wait_seconds

PROBE_VERSION = 4  # 4: the whole forward's batch invariance too; 3: a whole forward timed (2: the GEMMs alone)
# w4a8, int4, int8, w16a32, bf16, fp32: the faster first where they tie
PROBE_MODES = tuple(mode for mode in reversed(LINEAR_MODES) if mode not in NAMED_ONLY_MODES)
PROBE_LAYERS = 4  # enough weight bytes to leave the caches: what a real forward reads
HEAD_ROWS = 32768  # the head is probed on this many vocabulary rows and its time scaled (GEMV cost ~ rows)
PROBE_CONTEXT = 64  # positions cached before each timed call (llama.cpp's probe too): a short prompt's worth
MAX_ROWS = 9  # verification of K <= 8
REPEATS = 5
ALPHA_PRIOR = 0.8  # acceptance assumed when the target's mode is chosen, before any row has measured it
# the paper's regime has the draft at most this share of a target step (issue 23; Chen et al.'s 4B draft ~0.13 of
# the 70B): a flat mode that leaves the draft dearer is not the paper's regime. Compared with the probes' t(1), which
# read the draft 1.4-1.6x cheaper than the decode loop does (a back-to-back step against one after the target's
# weights went through the caches: 0.068 against 0.110 for int8 on torch's AVX2 paths, reports/paper-regime-avx2)
PAPER_REGIME_MAX_C = 0.15
# modes whose flatness (choose's paper regime) is within this share of the flattest tie: a probe's t(n) moves a few
# percent from run to run (w16a32 and int8 on torch's AVX2 paths read 2.51 and 2.55 tokens per t(1) in one probe,
# while the kernels alone put w16a32's t(4)/t(1) at 1.12 against int8's 1.36)
FLAT_TIE = 0.05
# what selects torch's CPU kernels besides the CPU itself (ATen's dispatch, oneDNN's and MKL's instruction sets)
KERNEL_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")
# the share of its threads' time a probe spent waiting for a CPU above which something else shared the CPU:
# measured 0.004-0.007 alone on 2 cores with 2 threads, 0.37 beside one busy process, 0.5 beside two
BUSY_WAIT_SHARE = 0.1
PROBE_ATTEMPTS = 2  # a busy probe is taken again once before it is used uncached


@dataclass
class ModeProbe:
    """One linear mode (or llama.cpp) measured on one model's shapes: ms of a whole forward per row count."""

    mode: str
    ms: dict[int, float]  # rows n -> ms (median of REPEATS)
    batch_invariant: bool
    ok: bool = True  # False: the mode cannot hold these shapes (e.g. int4 on inputs not a multiple of its group)
    note: str = ""
    # calls of up to this many rows are batch-invariant where not all are (llama.cpp switches kernels at some n)
    invariant_rows: int | None = None
    # the share of its threads' time this probe waited for a CPU (measure_quietly); None: not measured
    wait_share: float | None = None

    def ratio(self, rows: int) -> float:
        return self.ms[rows] / self.ms[1]

    def invariant_at(self, rows: int) -> bool:
        """Whether a call scoring `rows` tokens (and every smaller one) is batch-invariant."""
        return self.batch_invariant or (self.invariant_rows or 0) >= rows

    @property
    def runtime(self) -> str:
        """The catalogue.RUNTIMES name of this mode."""
        return self.mode if self.mode == "llama.cpp" else f"fast-{self.mode}"


@dataclass
class Choice:
    runtime: str  # "fast-<mode>" or "llama.cpp"
    reason: str
    probes: list[ModeProbe]
    k: int | None = None  # for a target, the K of the options offered that the choice expects to be best

    def as_record(self) -> dict:
        """What the manifest stores: the choice, why, t(n) of every mode, and what the fast modes' t(n) times
        (probe_version: 3 and on a whole forward, older records their GEMMs alone)."""
        return {"runtime": self.runtime, "reason": self.reason, "probe_version": PROBE_VERSION, "k": self.k,
                "probes": [{**asdict(p), "ms": {str(n): round(ms, 2) for n, ms in p.ms.items()}} for p in self.probes]}


def model_shapes(config, vocab_size: int) -> tuple[list[tuple[int, int]], tuple[int, int]]:
    """([out, in] of one decoder layer's four GEMMs as FastLlamaLM fuses them], [out, in] of the head)."""
    hidden, heads, kv_heads = config.hidden_size, config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    inter = config.intermediate_size
    layer = [((heads + 2 * kv_heads) * head_dim, hidden), (hidden, heads * head_dim), (2 * inter, hidden),
             (hidden, inter)]
    return layer, (vocab_size, hidden)


def _gemms_invariant(linears, inputs) -> bool:
    for linear, x in zip(linears, inputs):
        single = torch.cat([linear(x[i : i + 1]) for i in range(MAX_ROWS)])
        for n in range(2, MAX_ROWS + 1):
            if not torch.equal(linear(x[:n]), single[:n]):
                return False
    return True


def _forward_invariant(lm: FastLlamaLM, context: int, new: list[int]) -> bool:
    """Row i of an n-token forward (its hidden states) is bitwise the one-token forward at its position, n = 2..
    MAX_ROWS, after `context` cached positions (the cache holds them before and after)."""
    lm.rollback(context)
    single = torch.cat([lm.hidden_states([token]) for token in new[:MAX_ROWS]])
    invariant = True
    for n in range(2, MAX_ROWS + 1):
        lm.rollback(context)
        invariant = invariant and torch.equal(lm.hidden_states(new[:n]), single[:n])
    lm.rollback(context)
    return invariant


def _random_lm(config, mode: str, layer_shapes, head_rows: int, generator: torch.Generator) -> FastLlamaLM:
    """A FastLlamaLM of `config`'s widths with min(PROBE_LAYERS, depth) random layers in `mode` and a head of
    `head_rows` rows (make_linear's, as the real model's: int8 in int4 mode)."""
    def weight(shape):
        return torch.randn(shape, generator=generator) * 0.02

    hidden = config.hidden_size
    layers = [LayerWeights(*(make_linear(weight(shape), mode) for shape in layer_shapes),
                           qkv_bias=weight(layer_shapes[0][0]) if config.model_type == "qwen2" else None)
              for _ in range(min(PROBE_LAYERS, config.num_hidden_layers))]
    norms = [(torch.ones(hidden), torch.ones(hidden)) for _ in layers]
    table = weight((head_rows, hidden))
    embedding = table if mode == "fp32" else table.to(torch.bfloat16)
    return FastLlamaLM(config, embedding, layers, norms, torch.ones(hidden), make_linear(table, mode, head=True),
                       head_rows, PROBE_CONTEXT + MAX_ROWS, mode)


@torch.inference_mode()
def probe_mode(mode: str, config, vocab_size: int, seed: int = 0) -> ModeProbe:
    """Time and check `mode` on random weights of `config`'s shapes (see the module docstring)."""
    generator = torch.Generator().manual_seed(seed)
    layer_shapes, head_shape = model_shapes(config, vocab_size)
    head_rows = min(head_shape[0], HEAD_ROWS)
    try:
        lm = _random_lm(config, mode, layer_shapes, head_rows, generator)
    except Exception as exc:  # noqa: BLE001 - a kernel refusing these shapes rules the mode out, with its reason
        return ModeProbe(mode, {}, False, ok=False, note=str(exc).splitlines()[0][:200])
    x = {cols: torch.randn(MAX_ROWS, cols, generator=generator) for _, cols in [*layer_shapes, head_shape]}
    first = lm.layers[0]
    invariant = _gemms_invariant([first.qkv, first.out, first.gate_up, first.down, lm.head],
                                 [x[cols] for _, cols in layer_shapes] + [x[head_shape[1]]])
    tokens = torch.randint(head_rows, (PROBE_CONTEXT + MAX_ROWS,), generator=generator).tolist()
    layer_scale, head_scale = config.num_hidden_layers / len(lm.layers), head_shape[0] / head_rows

    def scaled_ms(lm, token_ids: list[int]) -> float:
        """The probed layers' time scaled to the model's depth, the probed head rows' to its vocabulary."""
        start = time.perf_counter()
        hidden = lm.hidden_states(token_ids)
        middle = time.perf_counter()
        lm.head(hidden)
        return ((middle - start) * layer_scale + (time.perf_counter() - middle) * head_scale) * 1e3

    t = time_rows({mode: lm}, tokens[:PROBE_CONTEXT], tokens[PROBE_CONTEXT:], range(1, MAX_ROWS + 1), REPEATS,
                  timed_call=scaled_ms)[mode]  # leaves the cache holding the context
    invariant = invariant and _forward_invariant(lm, PROBE_CONTEXT, tokens[PROBE_CONTEXT:])
    return ModeProbe(mode, t, invariant)


def expected_ms_per_token(probe: ModeProbe, k: int, draft_ms: float, alpha: float) -> float:
    """Leviathan et al.'s expected time per emitted token of SpS in this mode: (k * draft_ms + t(k+1)) / E(alpha, k),
    E = (1 - alpha^(k+1)) / (1 - alpha) tokens per target call (reproduce.analysis.theory has the same formulas)."""
    tokens = k + 1 if alpha >= 1 else (1 - alpha ** (k + 1)) / (1 - alpha)
    return (k * draft_ms + probe.ms[k + 1]) / tokens


def choose(probes: list[ModeProbe], role: str, k: int, k_options: tuple[int, ...] = (), draft_ms: float = 0.0,
           alpha: float = ALPHA_PRIOR) -> Choice:
    """The runtime `auto` picks from `probes` (pure: tested on made-up probes), and for a target the K it expects
    to be best of `k_options` (default: K alone).

    target: among batch-invariant modes, the one with the least expected SpS time per token at its best K, for a
    draft costing `draft_ms` and acceptance `alpha` (expected_ms_per_token): a mode's single-token speed traded
    against its verification cost, not a flatness bound. Failing invariance, the fastest mode, with a warning.
    flattest (a target in the paper's regime): among batch-invariant modes where a draft costing `draft_ms` is at
    most PAPER_REGIME_MAX_C of t(1) (all of them for draft_ms 0), the flattest verification: the most expected
    tokens per single-token call's worth of verification, E(alpha, K) / (t(K+1)/t(1)), at its best K offered (for
    one K: the smallest t(K+1)/t(1)); none so slow: the flattest of all, saying so. The draft's cost is left out
    of the ranking on purpose: counted, it would favour a slow t(1), whose draft share is small, over flat
    verification, the paper's premise. Its K: the one with the most predicted speedup over ArS in that mode,
    t(1) / expected_ms_per_token, the draft's cost counted (a flat mode's grows with K, a steep one's peaks early).
    draft: the fastest single token (a draft's numerics change speed and acceptance, never what SpS emits)."""
    usable = [p for p in probes if p.ok]
    fastest = lambda candidates, rows=1: min(candidates, key=lambda p: p.ms[rows])  # noqa: E731
    k_options = tuple(k_options) or (k,)
    if role in ("target", "flattest") and max(k_options) + 1 > MAX_ROWS:
        raise ReproduceError(f"runtime auto measures verification of K <= {MAX_ROWS - 1} drafts, got "
                             f"K={max(k_options)}: use a smaller K or name the runtime (e.g. --runtime fast-int8)")
    if role == "draft":
        best = fastest(usable)
        return Choice(best.runtime, f"fastest single token for a draft ({best.ms[1]:.0f} ms)", probes)
    if role == "flattest":  # the paper's regime: the batch-invariant mode cheapest per verification relative to one
        rows = max(k_options) + 1
        candidates = [p for p in usable if p.invariant_at(rows)] or usable
        cheap_draft = [p for p in candidates if draft_ms / p.ms[1] <= PAPER_REGIME_MAX_C]
        # flatness: the most tokens per single-token call's worth of verification, E / (t(K+1)/t(1)), at the mode's
        # best K (one K offered: the smallest t(K+1)/t(1)); modes within FLAT_TIE of the flattest count as flat
        # alike, and the fastest single token of them wins
        flatness = {p.mode: max(p.ms[1] / expected_ms_per_token(p, kk, 0.0, alpha) for kk in k_options)
                    for p in cheap_draft or candidates}
        flat_enough = max(flatness.values()) / (1 + FLAT_TIE)
        best = fastest([p for p in cheap_draft or candidates if flatness[p.mode] >= flat_enough])
        # its K: the most predicted speedup over ArS in this mode, the draft's cost counted (the smallest on ties)
        speedup = lambda kk: best.ms[1] / expected_ms_per_token(best, kk, draft_ms, alpha)  # noqa: E731
        best_k = max(k_options, key=lambda kk: (speedup(kk), -kk))
        draft = ("; the draft's cost not known: no cap on c" if not draft_ms
                 else f"; the draft ({draft_ms:.0f} ms) at c = {draft_ms / best.ms[1]:.2f}"
                 + ("" if cheap_draft else f": no mode leaves it at c <= {PAPER_REGIME_MAX_C}, the flattest of all"))
        return Choice(best.runtime, f"flattest batch-invariant verification (t(1) = {best.ms[1]:.0f} ms{draft}): "
                      f"K={best_k}, t({best_k + 1})/t(1) = {best.ratio(best_k + 1):.2f}, predicted "
                      f"{speedup(best_k):.2f}x over ArS in this mode at acceptance {alpha}: the paper's regime",
                      probes, best_k)
    # llama.cpp is batch-invariant up to some row count only: each K counts where its K+1 rows are
    options = [(p, kk) for p in usable for kk in k_options if p.invariant_at(kk + 1)]
    if options:
        ms, best_k, best = min(((expected_ms_per_token(p, kk, draft_ms, alpha), kk, p) for p, kk in options),
                               key=lambda option: option[:2])
        return Choice(best.runtime, f"least expected SpS time among batch-invariant modes: {ms:.0f} ms a token "
                      f"at K={best_k} (t(1) = {best.ms[1]:.0f} ms, t({best_k + 1})/t(1) = {best.ratio(best_k + 1):.2f}; "
                      f"acceptance {alpha}, draft {draft_ms:.0f} ms)", probes, best_k)
    best = fastest(usable)
    return Choice(best.runtime, "no mode is batch-invariant on this CPU: greedy SpS may differ from ArS by "
                  f"rounding; the fastest single token ({best.ms[1]:.0f} ms)", probes, max(k_options))


def measure_quietly(measure, what: str, threads: int) -> tuple[ModeProbe, bool]:
    """(the ModeProbe measure() returns, with its wait_share set; whether it was quiet): measure(), on `threads`
    threads, taken up to PROBE_ATTEMPTS times while its threads waited for a CPU more than BUSY_WAIT_SHARE of their
    time. Timings taken beside another busy process say nothing of this CPU, so a caller caches only a quiet probe;
    a busy one is used for this run with a warning on stderr. Where the kernel does not report waiting (not Linux),
    the share is None and the probe counts as quiet: nothing is checked there."""
    for _ in range(PROBE_ATTEMPTS):
        waited, start = runqueue_wait_seconds(), time.perf_counter()
        probe = measure()
        after = runqueue_wait_seconds()
        share = (None if waited is None or after is None or after < waited  # a thread exited: its wait is gone
                 else (after - waited) / ((time.perf_counter() - start) * threads))
        probe.wait_share = None if share is None else round(share, 4)
        if share is None or share <= BUSY_WAIT_SHARE:
            return probe, True
    print(f"warning: the probe of {what} waited for a CPU {share:.0%} of its threads' time in {PROBE_ATTEMPTS} "
          "attempts (another process is busy, or more threads than CPUs): its timings serve this run only, not "
          "cached; probe on a quiet machine for a choice that lasts", file=sys.stderr)
    return probe, False


# probes not cached (taken on a busy machine), kept for this process: a model asked for twice in a run (a draft's
# cost before the target is built, then the draft itself) gets one set of timings, not two
_BUSY_PROBES: dict = {}


def probe_model(config, vocab_size: int, modes=PROBE_MODES) -> list[ModeProbe]:
    """Probes of every mode on this model's shapes, from the cache when this CPU measured them before quietly.
    Each mode is checked for quiet on its own: a burst of another job during one mode is not averaged away."""
    layer_shapes, head_shape = model_shapes(config, vocab_size)
    # our C++ builds (the w4a8 kernel, the fused layer ops) are built (or found wanting) before any timing, outside
    # measure_quietly's window, and each build (ISA and source digest, or none) is part of the key: a changed
    # kernel, or a machine that lacked a compiler and has one now, probes again
    kernel_build = [w4a8.build_id() if "w4a8" in modes else None, w16a32.build_id() if "w16a32" in modes else None]
    key = json.dumps([PROBE_VERSION, cpu_key(), torch.__version__, torch.get_num_threads(), layer_shapes,
                      head_shape, config.num_hidden_layers, config.model_type, config.num_attention_heads,
                      config.num_key_value_heads, list(modes), {v: os.environ.get(v) for v in KERNEL_ENV},
                      kernel_build, layer_ops.build_id()])
    path = cache_dir() / "probes" / (hashlib.sha256(key.encode()).hexdigest()[:16] + ".json")
    if path in _BUSY_PROBES:  # taken beside another job earlier in this process: it serves the rest of the run
        return _BUSY_PROBES[path]
    if path.exists():
        return [ModeProbe(**{**p, "ms": {int(n): ms for n, ms in p["ms"].items()}}) for p in json.loads(path.read_text())]
    probes, all_quiet = [], True
    for mode in modes:
        probe, quiet = measure_quietly(
            functools.partial(probe_mode, mode, config, vocab_size),
            f"{mode} for a {config.model_type} of {config.num_hidden_layers} layers", torch.get_num_threads())
        probes.append(probe)
        all_quiet = all_quiet and quiet
    if all_quiet:
        write_atomically(path, json.dumps([asdict(p) for p in probes], indent=1).encode())
    else:
        _BUSY_PROBES[path] = probes
    return probes


def format_choice(name: str, choice: Choice, k: int | None) -> str:
    """One block for the console: the choice, the reason, and t(n) of every mode."""
    lines = [f"runtime auto for {name}: {choice.runtime}, {choice.reason}"]
    for p in choice.probes:
        if not p.ok:
            lines.append(f"  {p.mode:>5}: not usable ({p.note})")
            continue
        curve = " ".join(f"{p.ms[n]:.0f}" for n in sorted(p.ms))
        flag = "batch-invariant" if p.batch_invariant else "NOT batch-invariant"
        if not p.batch_invariant and p.invariant_rows:
            flag = f"batch-invariant up to {p.invariant_rows} rows only"
        lines.append(f"  {p.mode:>5}: t(1..{len(p.ms)}) = {curve} ms, {flag}"
                     + (f", t({k + 1})/t(1) = {p.ratio(k + 1):.2f}" if k else ""))
    return "\n".join(lines)
