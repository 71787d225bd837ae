"""A run's files, each named here once: rows.jsonl (one raw row per finished (unit, method)), manifest.json and
config.yaml (the resolved config), summary.json and rows.csv (the analysis's summary and tidy table), and the one
JSON cleaner.

Analysis, report and benchmarks read results through this module, never through the runner (which loads torch
and the models).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from reproduce.errors import ReproduceError
from reproduce.offline import write_atomically

ROWS_FILE = "rows.jsonl"


MANIFEST_FILE = "manifest.json"


CONFIG_FILE = "config.yaml"  # the resolved config, rerunnable: python -m reproduce run --config DIR/config.yaml --out DIR


SUMMARY_FILE = "summary.json"  # written by the analysis (python -m reproduce analyse DIR): what the report reads


TIDY_FILE = "rows.csv"  # written by the analysis: one flat row per (prompt, method) with its quality, for pandas


def require_results(out_dir: Path) -> None:
    """The one-line error for a directory that holds no run (what `analyse` and `report` are given)."""
    if not (Path(out_dir) / ROWS_FILE).is_file() or not (Path(out_dir) / MANIFEST_FILE).is_file():
        raise ReproduceError(f"{out_dir} holds no experiment results ({ROWS_FILE}, {MANIFEST_FILE}): "
                             "run `python -m reproduce run --profile NAME --out DIR` first")


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
    """Plain, strict JSON values: NaN/inf become null, numpy scalars Python ones, tuples lists, keys strings."""
    if hasattr(value, "item") and not hasattr(value, "__len__"):  # a numpy scalar (np.float64, np.int64, np.bool_)
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_json(path: Path, data: dict) -> None:
    write_atomically(path, json.dumps(json_safe(data), indent=2, default=str).encode())
