"""Run an experiment config: every unit (one prompt under one setting) runs each method back to back.

Methods are interleaved per prompt (their order rotates from unit to unit), so machine drift, which is 20-35%
within an hour here, hits every method alike. Each finished (unit, method) is one JSONL row, written and
fsynced at once: rerunning the same config skips finished rows, so an interrupted run resumes losing nothing.

Rows hold raw measurements only (trace summary, generated ids and text, target log-probs); every statistic is
derived later by `reproduce.analysis` from these rows.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

ROWS_FILE = "rows.jsonl"


MANIFEST_FILE = "manifest.json"


def read_done_keys(rows_path: Path) -> set[str]:
    """Keys of finished rows. A torn last line (the run was killed mid-write) is cut off the file."""
    if not rows_path.exists():
        return set()
    keys, good_bytes = set(), 0
    with open(rows_path, "rb") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break
            keys.add(row_key(row))
            good_bytes += len(line)
    if good_bytes < rows_path.stat().st_size:
        with open(rows_path, "r+b") as f:
            f.truncate(good_bytes)
    return keys


def row_key(row: dict) -> str:
    fields = ("block", "task", "example_id", "mode", "seed", "sample", "sweep_value", "method", "draft", "k")
    return json.dumps({f: row[f] for f in fields}, sort_keys=True)


def read_rows(out_dir: Path) -> list[dict]:
    with open(Path(out_dir) / ROWS_FILE) as f:
        return [json.loads(line) for line in f if line.strip()]


def json_safe(value):
    """NaN/inf become null so the rows are strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(json_safe(data), indent=2, default=str))
    tmp.replace(path)
