"""How the probes and benchmarks time a model call: an n-token call after a fixed cached context, rolled back after.

One definition for all of them (reproduce.engine.probe, reproduce.engine.llamacpp_probe and the benchmarks), so a
t(n) means the same thing wherever it is quoted: each LM's cache holds `context`, every call appends `new[:n]` and
is rolled back, the calls run round-robin over (round, n, LM) so that drift over minutes hits every n and every LM
alike (timings drift 20-35% within an hour on shared machines), the first rounds warm up allocators and kernels and
are dropped, and the median of the rest is kept.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Iterable

import torch


def wall_ms(lm, token_ids: list[int]) -> float:
    """Milliseconds of one `lm.forward(token_ids)`."""
    start = time.perf_counter()
    lm.forward(token_ids)
    return (time.perf_counter() - start) * 1e3


@torch.inference_mode()
def time_rows(lms: dict, context: list[int], new: list[int], rows: Iterable[int] | dict[str, Iterable[int]],
              repeats: int, warmup_rounds: int = 1,
              timed_call: Callable[[object, list[int]], float] = wall_ms) -> dict[str, dict[int, float]]:
    """Median ms {name: {n: ms}} of `timed_call(lm, new[:n])` per LM and n after `context` (prefilled here).

    `rows`: the n to time, for every LM or per LM name. `timed_call` returns one call's ms (default: the wall
    time of lm.forward); a probe that scales parts of a call passes its own. Leaves each cache holding `context`."""
    if not isinstance(rows, dict):
        rows = dict.fromkeys(lms, list(rows))  # read once: `rows` may be an iterator
    rows_of = {name: set(rows[name]) for name in lms}
    most = max(max(r) for r in rows_of.values())
    if most > len(new):
        raise ValueError(f"rows up to {most} need that many new tokens, got {len(new)}")
    for lm in lms.values():
        lm.reset()
        lm.forward(context, last_only=True)
    samples = {name: {n: [] for n in sorted(rows_of[name])} for name in lms}
    for round_number in range(warmup_rounds + repeats):
        for n in sorted(set().union(*rows_of.values())):
            for name, lm in lms.items():
                if n in rows_of[name]:
                    lm.rollback(len(context))
                    elapsed = timed_call(lm, new[:n])
                    if round_number >= warmup_rounds:
                        samples[name][n].append(elapsed)
    for lm in lms.values():
        lm.rollback(len(context))
    return {name: {n: statistics.median(times) for n, times in curve.items()} for name, curve in samples.items()}
