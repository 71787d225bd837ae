"""An adaptive draft length against a fixed K, from a run of experiments/adaptive.yaml: per task and mode, each
adaptive draft's decode-loop speed over its fixed-K twin (the same model, runtime, head and K, stop_below 0), paired
by prompt (reproduce.analysis.ratios: a t interval on per-prompt log ratios; prompts are independent), with the
paired t-test's p, the tokens drafted per target call and the share of them accepted, and whether greedy outputs
equal ArS's. Prints a Markdown table; nothing is asserted (speed is a measurement, not a unit test). `--drafts A,B`
compares any two drafts of a run the same way, A's speed over B's (e.g. experiments/draft-bits.yaml's 3-bit draft
over its 4-bit twin).

    python -m reproduce run --profile adaptive        # ~9 min at 10 prompts a task on 2 AVX-512 cores
    python -m benchmarks.adaptive --out results/adaptive
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from reproduce.analysis.ratios import log_ratio_interval, log_ratio_ttest
from reproduce.runs.results import ROWS_FILE


def twins(config: dict) -> dict[str, str]:
    """adaptive draft name -> its fixed-K twin's name (same model, runtime, head and K values)."""
    def same(a: dict, b: dict) -> bool:
        return all(a.get(key) == b.get(key) for key in ("model", "runtime", "vocabulary", "k_values", "dtype"))
    drafts = config["drafts"]
    return {a["name"]: b["name"] for a in drafts if a.get("stop_below")
            for b in drafts if not b.get("stop_below") and same(a, b)}


def compare(rows: list[dict], adaptive: str, fixed: str) -> list[str]:
    lines = []
    for task, mode in sorted({(r["task"], r["mode"]) for r in rows}):
        by_prompt: dict = {}
        for r in rows:
            if (r["task"], r["mode"], r["block"]) == (task, mode, "main"):
                by_prompt.setdefault((r["example_id"], r["sample"]), {})[(r["method"], r["draft"], r["k"])] = r
        for k in sorted({key[2] for m in by_prompt.values() for key in m if key[1] == adaptive}):
            pairs = [(m[("sps", fixed, k)], m[("sps", adaptive, k)], m.get(("ars", None, None)))
                     for m in by_prompt.values() if ("sps", fixed, k) in m and ("sps", adaptive, k) in m]
            if len(pairs) < 2:
                continue
            fixed_ms = [f["decode_ms_per_token"] for f, _, _ in pairs]
            adaptive_ms = [a["decode_ms_per_token"] for _, a, _ in pairs]
            ratio = log_ratio_interval(fixed_ms, adaptive_ms)
            p = log_ratio_ttest(fixed_ms, adaptive_ms).get("p_value")

            def per_call(i: int) -> str:
                drafted = sum(pair[i]["proposed"] for pair in pairs) / sum(pair[i]["target_calls"] for pair in pairs)
                accepted = sum(pair[i]["accepted"] for pair in pairs) / sum(pair[i]["proposed"] for pair in pairs)
                return f"{drafted:.2f} / {accepted:.2f}"
            greedy = [(f, a, ars) for f, a, ars in pairs if ars is not None and ars["temperature"] == 0]
            same = sum(f["generated_ids"] == a["generated_ids"] == ars["generated_ids"] for f, a, ars in greedy)
            lines.append(f"| {task} {mode} | {adaptive} vs {fixed}, K={k} | {len(pairs)} | "
                         f"{ratio['point']:.3f}x [{ratio['ci'][0]:.3f}, {ratio['ci'][1]:.3f}] | "
                         f"{'n/a' if p is None else f'{p:.4f}'} | {per_call(0)} | {per_call(1)} | "
                         f"{f'{same}/{len(greedy)}' if greedy else 'n/a (sampled)'} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/adaptive"), help="the run's results directory")
    parser.add_argument("--drafts", help="A,B: draft A's speed over draft B's instead of adaptive over fixed twins")
    args = parser.parse_args(argv)
    manifest = json.loads((args.out / "manifest.json").read_text())
    rows = [json.loads(line) for line in (args.out / ROWS_FILE).read_text().splitlines() if line.strip()]
    named = args.drafts.split(",") if args.drafts else None
    pairs = {named[0]: named[1]} if named else twins(manifest["config"])
    what = f"{named[0]} against {named[1]}" if named else "Adaptive draft length against a fixed K"
    print(f"# {what} ({manifest['config']['name']})\n")
    print(f"Command: `python -m benchmarks.adaptive --out {args.out}{f' --drafts {args.drafts}' if named else ''}`\n")
    if not pairs:
        print("No draft with stop_below and a fixed-K twin in this run.")
        return
    first, second = named if named else ("adaptive", "fixed")
    print(f"| setting | drafts | prompts | {first} speed / {second}, decode loop [95% CI] | paired t p | {second}: "
          f"drafted per call / accepted share | {first}: the same | greedy: identical to ArS |")
    print("|---|---|---|---|---|---|---|---|")
    for adaptive, fixed in pairs.items():
        print("\n".join(compare(rows, adaptive, fixed)))


if __name__ == "__main__":
    main()
