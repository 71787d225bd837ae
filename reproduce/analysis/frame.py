"""The analysis's per-row frame: the raw rows of a run as a pandas DataFrame, the keys that pair methods on one
prompt, and the random state of every bootstrap.

Pairing: methods are compared on the same unit (block, task, example, mode, seed, sample), so every speedup
and quality difference is a paired per-prompt comparison against the ArS baseline run on that same prompt.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from reproduce.catalogue import method_label
from reproduce.errors import ReproduceError
from reproduce.runs.results import ROWS_FILE, read_rows

UNIT = ["block", "task", "example_id", "mode", "seed", "sample", "sweep_value"]
PROMPT = ["example_id", "seed", "sample"]  # one prompt (and sample) across the values of a sweep
BOOTSTRAP_SEED = 20230202  # arXiv 2302.01318: every bootstrap in the report derives its seed from this one


def rng_for(*key) -> np.random.Generator:
    """The random state of one statistic, derived from BOOTSTRAP_SEED and what it describes (an entry's block,
    task, mode, sweep value and variant, and the statistic's name): every interval is reproducible on its own,
    and adding a statistic does not move the others."""
    plain = tuple(x.item() if hasattr(x, "item") else x for x in key)  # np.int64(2) and 2: one seed
    return np.random.default_rng([BOOTSTRAP_SEED, zlib.crc32(repr(plain).encode())])

def load_frame(out_dir: Path) -> pd.DataFrame:
    rows = read_rows(out_dir)
    if not rows:
        raise ReproduceError(f"{out_dir}/{ROWS_FILE} has no rows: run the experiment first")
    frame = pd.DataFrame(rows)
    frame["variant"] = [method_label(m, d, k) for m, d, k in zip(frame["method"], frame["draft"], frame["k"])]
    frame["sweep_value"] = frame["sweep_value"].astype(object).where(frame["sweep_value"].notna(), None)
    return add_timing_columns(frame)


def add_timing_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """The decode-loop timing of every row, for rows written before the runner recorded it too.

    New rows carry decode_ms (the decode loop alone), prefill_ms (the target's prefill of the prompt, run once and
    shared by the unit's methods), draft_prefill_ms (the draft's own prefill, charged to SpS), wall_ms = the sum
    of the three, decode_ms_per_token and quality_tokens (the tokens kept for quality, cut at EOS or a stop
    sequence). Older rows lack the decode fields: there each row paid its own prefill inside wall_ms, so
    decode_ms = wall_ms - prefill_ms, draft_prefill_ms = 0, and every generated token counts for quality."""
    frame = frame.copy()
    frame["decode_measured"] = frame["decode_ms"].notna() if "decode_ms" in frame.columns else False
    if "draft_prefill_ms" not in frame.columns:
        frame["draft_prefill_ms"] = 0.0
    frame["draft_prefill_ms"] = frame["draft_prefill_ms"].fillna(0.0).astype(float)
    derived = frame["wall_ms"] - frame["prefill_ms"] - frame["draft_prefill_ms"]
    frame["decode_ms"] = frame["decode_ms"].fillna(derived) if "decode_ms" in frame.columns else derived
    per_token = frame["decode_ms"] / frame["num_tokens"].clip(lower=1)
    if "decode_ms_per_token" in frame.columns:
        per_token = frame["decode_ms_per_token"].fillna(per_token)
    frame["decode_ms_per_token"] = per_token.astype(float)
    if "quality_tokens" not in frame.columns:
        frame["quality_tokens"] = frame["num_tokens"]
    frame["quality_tokens"] = frame["quality_tokens"].fillna(frame["num_tokens"]).astype(int)
    return frame


def pct(values, q):
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.percentile(values, q)) if values else None


def ratio(a, b):
    return float(a) / float(b) if b else None
