"""Perplexity under the target from the log-probs the runner stored for each generated token:
exp(-(1/N) sum_i log P(g_i | prompt, g_<i)) per example (NaN for an example with no tokens).

No model runs here (the runner scored the tokens when it generated them), so it stays torch-free. Unlike the
hub's `perplexity`, which loads a model by id and scores texts, it takes the log-probs themselves."""

import math

import datasets
import evaluate
import numpy as np


class Perplexity(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation="",
            inputs_description="logprobs: list of lists of float, each generated token's natural-log probability "
                               "under the target. Returns {'perplexities': [one per example], "
                               "'mean_perplexity': their mean}.",
            # float64, as the runner stores them: float32 would round the log-probs and change the numbers
            features=datasets.Features({"logprobs": datasets.Sequence(datasets.Value("float64"))}),
        )

    def _compute(self, logprobs):
        perplexities = [math.exp(-float(np.mean(lp))) if len(lp) else float("nan") for lp in logprobs]
        return {"perplexities": perplexities,
                "mean_perplexity": float(np.mean(perplexities)) if perplexities else float("nan")}
