"""The llama.cpp runtime measured like the fast modes (reproduce.engine.probe): t(n) and batch invariance.

Unlike the fast modes' probe (random weights of the model's shapes), this runs the real GGUF: llama.cpp's
kernels are chosen per tensor type and row count inside llama.cpp, so only the model itself says what they do.
After a prompt of PROBE_PROMPT tokens, it times an n-token `forward` for n = 1..MAX_ROWS (the median of REPEATS,
rows interleaved so drift hits every n alike) and checks bitwise that every row of an n-token call equals the
single-token call at its position (greedy SpS == ArS needs it), recording the largest n up to which every call
does (measured: up to 7 rows on our AVX-512 Xeon, not from 8 on, where llama.cpp changes kernels). The result is a probe.ModeProbe of mode
"llama.cpp", cached (when taken quietly: probe.measure_quietly) in $REPRODUCE_CACHE/probes by CPU, llama-cpp-python
version and build features, threads and the GGUF file.

Its t(n) is a whole forward after PROBE_PROMPT cached positions, as the fast modes' probe times theirs, so `choose`
compares like with like (before probe version 3 the fast modes' t(n) was their GEMMs alone, which favoured them).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict
from pathlib import Path

import torch

from reproduce.engine.probe import MAX_ROWS, PROBE_CONTEXT, REPEATS, ModeProbe, measure_quietly
from reproduce.engine.timing import time_rows
from reproduce.offline import cache_dir, write_atomically
from reproduce.provenance import cpu_key

PROBE_VERSION = 1
PROBE_PROMPT = PROBE_CONTEXT  # tokens cached before each timed call, as the fast modes' probe
MODE = "llama.cpp"


@torch.inference_mode()
def probe_lm(lm, repeats: int = REPEATS, max_rows: int = MAX_ROWS, seed: int = 0) -> ModeProbe:
    """Measure a LlamaCppLM (any cached LM, in fact) as the module docstring says; leaves its cache empty."""
    rng = random.Random(seed)
    tokens = [rng.randrange(lm.vocab_size) for _ in range(PROBE_PROMPT + max_rows)]
    prompt, new = tokens[:PROBE_PROMPT], tokens[PROBE_PROMPT:]
    lm.reset()
    lm.forward(prompt, last_only=True)
    single = torch.cat([lm.forward([token]) for token in new])  # [max_rows, V]: row i at position PROBE_PROMPT + i
    worst, invariant_rows = 0.0, 1  # the largest n with every call of 2..n rows bitwise equal to single calls
    for n in range(2, max_rows + 1):
        lm.rollback(PROBE_PROMPT)
        difference = (lm.forward(new[:n]) - single[:n]).abs().max().item()
        worst = max(worst, difference)
        invariant_rows = n if worst == 0 else invariant_rows
    t = time_rows({MODE: lm}, prompt, new, range(1, max_rows + 1), repeats)[MODE]
    lm.reset()
    note = "rows bitwise equal to single-token calls" if worst == 0 else \
        f"calls of {invariant_rows + 1}+ rows differ from single-token calls by up to {worst:.3g} in a logit"
    return ModeProbe(MODE, t, worst == 0, note=note, invariant_rows=invariant_rows)


def probe_gguf(path, vocab_size: int, n_threads: int | None = None) -> ModeProbe:
    """probe_lm on the GGUF at `path`, from the cache when this CPU measured this file before."""
    import llama_cpp

    from reproduce.engine.llamacpp_lm import LlamaCppLM

    path = Path(path).resolve()
    n_threads = n_threads or torch.get_num_threads()
    stat = path.stat()
    key = json.dumps([PROBE_VERSION, cpu_key(), llama_cpp.__version__, n_threads, str(path), stat.st_size,
                      stat.st_mtime_ns, vocab_size,
                      # the build's instruction sets: an AVX2-only build on an AVX-512 CPU must not read the native one's
                      llama_cpp.llama_print_system_info().decode(errors="replace")])
    cached = cache_dir() / "probes" / f"llamacpp-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
    if cached.exists():
        record = json.loads(cached.read_text())
        return ModeProbe(**{**record, "ms": {int(n): ms for n, ms in record["ms"].items()}})
    lm = LlamaCppLM.load(path, vocab_size, n_threads)
    probe, quiet = measure_quietly(lambda: probe_lm(lm), f"llama.cpp on {path.name}", n_threads)
    if quiet:  # as probe.probe_model: a probe taken on a busy machine serves this run only
        write_atomically(cached, json.dumps(asdict(probe), indent=1).encode())
    return probe
