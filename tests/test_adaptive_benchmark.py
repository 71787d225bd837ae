"""benchmarks/adaptive.py on synthetic rows: it pairs each adaptive draft with its fixed-K twin by prompt, reads a
known speed ratio back with its interval, and says so when the two are equally fast (the negative control)."""

from __future__ import annotations

import json

from benchmarks import adaptive

CONFIG = {"name": "adaptive", "drafts": [
    {"name": "q", "model": "m", "runtime": "auto", "vocabulary": 8, "k_values": [3], "dtype": "bfloat16", "stop_below": 0.0},
    {"name": "q-adaptive", "model": "m", "runtime": "auto", "vocabulary": 8, "k_values": [3], "dtype": "bfloat16",
     "stop_below": 0.4},
    {"name": "other", "model": "n", "runtime": "auto", "vocabulary": None, "k_values": [3], "dtype": "bfloat16",
     "stop_below": 0.0}]}


def _rows(speedup: float) -> list[dict]:
    rows = []
    for prompt, jitter in enumerate((1.0, 1.02, 0.98, 1.01, 0.99, 1.03)):
        common = {"block": "main", "task": "xsum", "mode": "greedy", "example_id": prompt, "sample": 0,
                  "temperature": 0.0, "generated_ids": [prompt, 1, 2]}
        rows.append({**common, "method": "ars", "draft": None, "k": None, "decode_ms_per_token": 90.0})
        rows.append({**common, "method": "sps", "draft": "q", "k": 3, "decode_ms_per_token": 60.0 * jitter,
                     "proposed": 30, "target_calls": 10, "accepted": 15})
        rows.append({**common, "method": "sps", "draft": "q-adaptive", "k": 3,
                     "decode_ms_per_token": 60.0 * jitter / speedup, "proposed": 22, "target_calls": 10, "accepted": 14})
    return rows


def test_adaptive_is_paired_with_its_fixed_twin_and_its_ratio_read_back(tmp_path, capsys):
    assert adaptive.twins(CONFIG) == {"q-adaptive": "q"}  # not "other": another model
    (line,) = adaptive.compare(_rows(1.10), "q-adaptive", "q")
    assert "| 6 | 1.100x [1.100, 1.100] |" in line and "3.00 / 0.50 | 2.20 / 0.64 | 6/6 |" in line
    (tmp_path / "manifest.json").write_text(json.dumps({"config": CONFIG}))
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in _rows(1.10)))
    adaptive.main(["--out", str(tmp_path)])
    assert "| xsum greedy | q-adaptive vs q, K=3 | 6 | 1.100x" in capsys.readouterr().out


def test_equal_speeds_read_as_no_gain():
    rows = _rows(1.0)
    for r in rows:  # per-prompt noise in both directions, no systematic gain
        if r["draft"] == "q-adaptive":
            r["decode_ms_per_token"] *= 1.02 if r["example_id"] % 2 else 0.98
    (line,) = adaptive.compare(rows, "q-adaptive", "q")
    low, high = (float(x) for x in line.split("[")[1].split("]")[0].split(", "))
    assert low < 1.0 < high  # the interval covers 1: no gain claimed


def test_any_two_drafts_are_compared_when_named(tmp_path, capsys):
    """--drafts A,B: A's speed over B's, whatever their stop_below (here the fixed draft over the adaptive one, the
    inverse ratio of the twins' comparison)."""
    (tmp_path / "manifest.json").write_text(json.dumps({"config": CONFIG}))
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in _rows(1.25)))
    adaptive.main(["--out", str(tmp_path), "--drafts", "q,q-adaptive"])
    out = capsys.readouterr().out
    assert "# q against q-adaptive" in out and "| q speed / q-adaptive," in out
    assert "| xsum greedy | q vs q-adaptive, K=3 | 6 | 0.800x [0.800, 0.800] |" in out
