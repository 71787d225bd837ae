"""The tidy results table: `results/<run>/rows.csv`, one flat row per (prompt, method), for pandas.

Written by the analysis beside summary.json, from the same per-row frame (raw rows plus quality), so it holds
exactly what the report's statistics are computed from:

    import pandas as pd
    rows = pd.read_csv("results/mine/rows.csv")
    rows[rows.block == "main"].groupby(["task", "mode", "variant"])["ms_per_token"].mean()

One row per (block, task, example, mode, seed, sample, sweep value) and method; `block` is "main" or a sweep's
name. Empty cells are values that do not apply (no acceptance for ArS, no ROUGE for HumanEval, no pass for XSum).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from reproduce.catalogue import METHOD_KINDS
from reproduce.tasks import TASKS
from reproduce.runs.results import TIDY_FILE

# (column, meaning); the README and `rows.csv` users rely on these names
COLUMNS = (
    ("block", "main, or the sweep's name"),
    ("task", ", ".join(TASKS)),
    ("mode", "sampling mode name (greedy, xsum_nucleus, ...)"),
    ("example_id", "the task's example id"),
    ("seed", "experiment seed"),
    ("sample", "sample index within the prompt (num_samples > 1)"),
    ("sweep_value", "the swept setting's value (sweeps only)"),
    ("method", "the method kind: " + ", ".join(METHOD_KINDS) + " (reproduce.catalogue.METHOD_KINDS)"),
    ("draft", "draft name (methods with a draft)"),
    ("k", "tokens drafted per target call (SpS and its peers)"),
    ("variant", "readable method label, e.g. SpS[ngram,K=4]"),
    ("temperature", "sampling temperature (0 = greedy)"),
    ("top_p", "nucleus mass"),
    ("prompt_tokens", "prompt length in tokens"),
    ("max_new_tokens", "generation budget"),
    ("tokens", "tokens generated (timing rows: exactly max_new_tokens, EOS ignored)"),
    ("quality_tokens", "tokens kept for quality, cut at EOS or the task's stop sequences (older rows: all of them)"),
    ("stop_reason", "why decoding stopped"),
    ("decode_ms_per_token", "decode_ms / tokens: the primary speed measure (the paper's mean sampling time per token)"),
    ("ms_per_token", "wall_ms / tokens: end to end, every prefill included"),
    ("decode_ms", "wall time of the decode loop alone, after every prefill (older rows: wall_ms - prefill_ms)"),
    ("prefill_ms", "the target's prefill of the prompt, run once per prompt and shared by its methods (older rows: "
                   "this row's own)"),
    ("draft_prefill_ms", "the draft model's own prefill, charged to SpS (0 for ArS, the n-gram draft and older rows)"),
    ("wall_ms", "prefill_ms + draft_prefill_ms + decode_ms: end to end"),
    ("target_calls", "target forward calls"),
    ("proposed", "drafted tokens"),
    ("accepted", "drafted tokens accepted"),
    ("acceptance", "accepted / drafted tokens"),
    ("alpha", "mean expected acceptance per drafted token"),
    ("accepted_per_call", "accepted drafted tokens per target call (methods that draft)"),
    ("tokens_per_call", "tokens generated per target call (1 for ArS; empty for Hugging Face's generate())"),
    ("rouge1", "ROUGE-1 F vs the reference summary (xsum)"),
    ("rouge2", "ROUGE-2 F vs the reference summary (xsum)"),
    ("rougeL", "ROUGE-L F vs the reference summary (xsum)"),
    ("rouge2_vs_ars", "ROUGE-2 F vs ArS's output on the same prompt (text tasks)"),
    ("passed", "1 / 0: the HumanEval completion passed its tests (humaneval)"),
    ("decision", "the answer's decision, the first whole word yes / no / maybe in it (pubmedqa; empty: none)"),
    ("correct", "1 / 0: the decision is the dataset's label (pubmedqa)"),
    ("perplexity", "perplexity of the output under the target"),
    ("exact_match_ars", "the generated ids equal ArS's on the same prompt"),
)
RENAMED = {"num_tokens": "tokens", "acceptance_rate": "acceptance", "tokens_per_target_call": "tokens_per_call"}


def tidy_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The per-row frame of the analysis (raw rows + quality columns) -> the flat table, in COLUMNS order
    (a column the frame lacks is left out)."""
    table = frame.rename(columns=RENAMED)
    if {"target_calls", "accepted", "method"} <= set(table.columns):
        calls = table["target_calls"].where(table["target_calls"] > 0)  # Hugging Face's generate() counts none
        drafts = table["method"].map(lambda m: METHOD_KINDS[m].uses_k)  # SpS and its peers: the methods that draft
        table = table.assign(accepted_per_call=(table["accepted"] / calls).where(drafts))
        if "tokens_per_call" in table.columns:
            table = table.assign(tokens_per_call=table["tokens_per_call"].where(calls.notna()))
    return table[[name for name, _ in COLUMNS if name in table.columns]].reset_index(drop=True)


def write_tidy(frame: pd.DataFrame, out_dir: Path) -> Path:
    """Write out_dir/rows.csv atomically and return its path."""
    path = Path(out_dir) / TIDY_FILE
    tmp = path.with_name(path.name + ".tmp")
    tidy_table(frame).to_csv(tmp, index=False)
    tmp.replace(path)
    return path
