"""Output quality: per row, the scores of each output (add_quality), and per method, their means with intervals
(quality_summary). Which score applies to a task is the task's `scoring` (reproduce.tasks.TASKS)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from reproduce import tasks
from reproduce.analysis import metrics, stats
from reproduce.analysis.frame import UNIT, pct
from reproduce.analysis.sandbox import evaluate_completions


def add_quality(frame: pd.DataFrame) -> pd.DataFrame:
    """Per-row quality: the scored text, ROUGE vs the reference summary (XSum) and vs the unit's ArS output,
    perplexity under the target, exact match with ArS, HumanEval pass (run in the sandbox subprocess), and for
    PubMedQA the answer's decision (the first whole word yes / no / maybe) and whether it is the dataset's label
    (the offline file holds only the label, no long answer). ROUGE and perplexity come from the suite's
    `evaluate` modules (metrics.load_metric), as does pass@k in quality_summary."""
    frame = frame.copy()
    # rows written before the chat format for HumanEval existed carry no prompt_format: they were all raw
    formats = frame["prompt_format"].fillna("raw") if "prompt_format" in frame else ["raw"] * len(frame)
    frame["scored_text"] = [tasks.postprocess_output(t, x, f) for t, x, f in zip(frame["task"], frame["text"], formats)]
    perplexity = metrics.load_metric("perplexity").compute(logprobs=list(frame["target_logprobs"]))
    frame["perplexity"] = perplexity["perplexities"]
    frame["log_perplexity"] = np.log(frame["perplexity"])
    ars = frame[frame["method"] == "ars"].set_index(UNIT)
    keys = list(zip(*(frame[c] for c in UNIT)))
    ars_text = [ars["scored_text"].get(key) if key in ars.index else None for key in keys]
    ars_ids = [ars["generated_ids"].get(key) if key in ars.index else None for key in keys]
    frame["exact_match_ars"] = [ids == a if a is not None else None for ids, a in zip(frame["generated_ids"], ars_ids)]
    text_tasks = ~frame["task"].isin(tasks.tasks_scored_by("code"))
    reference_tasks = frame["task"].isin(tasks.tasks_scored_by("reference_text"))
    for column in ("rouge1", "rouge2", "rougeL", "rouge2_vs_ars", "correct"):
        frame[column] = np.nan
    frame["decision"] = None
    rouge = metrics.load_metric("rouge") if text_tasks.any() else None
    if reference_tasks.any():
        sub = frame[reference_tasks]
        scores = rouge.compute(predictions=list(sub["scored_text"]), references=list(sub["reference"]))
        for name, values in scores.items():
            frame.loc[reference_tasks, name] = values
    decision_tasks = frame["task"].isin(tasks.tasks_scored_by("decision"))
    if decision_tasks.any():
        sub = frame[decision_tasks]
        frame.loc[decision_tasks, "decision"] = [metrics.pubmedqa_decision(t) for t in sub["scored_text"]]
        frame.loc[decision_tasks, "correct"] = [metrics.decision_correct(t, label)
                                                for t, label in zip(sub["scored_text"], sub["reference"])]
    if text_tasks.any():
        sub = frame[text_tasks]
        paired = [(i, a) for i, a in zip(sub.index, np.array(ars_text, dtype=object)[text_tasks.values]) if a is not None]
        if paired:
            vs_ars = rouge.compute(predictions=[frame.at[i, "scored_text"] for i, _ in paired],
                                   references=[a for _, a in paired], rouge_types=["rouge2"])
            frame.loc[[i for i, _ in paired], "rouge2_vs_ars"] = vs_ars["rouge2"]
    frame["passed"] = np.nan
    code = frame["task"].isin(tasks.tasks_scored_by("code"))
    if code.any():
        problems = {e.example_id: e.extra for task in frame.loc[code, "task"].unique()
                    for e in tasks.load_examples(task, None)}
        sub = frame[code]
        results = evaluate_completions([problems[i] for i in sub["example_id"]], list(sub["scored_text"]))
        frame.loc[code, "passed"] = [float(r["passed"]) for r in results]
    return frame

def quality_summary(rows: pd.DataFrame, rng, proportion_rng) -> dict:
    """Quality of one method's rows: means with 95% intervals over prompts. Shares of 0/1 outcomes (pass@1,
    PubMedQA decision accuracy) get the Wilson interval when each problem has one sample and a bootstrap over
    problems when it has several (stats.proportion_ci); pass@k (k = the samples per problem, when above 1) the
    unbiased estimator per problem with a bootstrap over problems. Perplexity is per sequence, under the target."""
    quality = {"perplexity_median": pct(rows["perplexity"], 50), "log_perplexity": stats.mean_ci(rows["log_perplexity"], rng)}
    if rows["rouge2"].notna().any():
        quality.update({name: stats.mean_ci(rows[name], rng) for name in ("rouge1", "rouge2", "rougeL")})
    if rows["rouge2_vs_ars"].notna().any():
        quality["rouge2_vs_ars"] = stats.mean_ci(rows["rouge2_vs_ars"], rng)
    if rows["passed"].notna().any():
        checked = rows[rows["passed"].notna()]
        n_min = int(checked.groupby("example_id").size().min())  # samples per problem: pass@k for k up to that
        ks = [1, n_min] if n_min > 1 else [1]
        pass_at = metrics.load_metric("pass_at_k").compute(
            passed=[bool(p) for p in checked["passed"]], problem_ids=[str(i) for i in checked["example_id"]], k=ks)
        for k in ks:
            quality[f"pass_at_{k}"] = pass_at[f"pass@{k}"]
        # pass@1 = the share of samples that pass, with its interval over problems
        quality["pass"] = stats.proportion_ci(checked["passed"], checked["example_id"], proportion_rng)
        if n_min > 1:
            per_problem = pass_at[f"pass@{n_min} per problem"]
            if all(v in (0.0, 1.0) for v in per_problem):  # every problem solved for sure or never: Wilson over problems
                quality["pass_at_k"] = {"k": n_min, "mean": float(np.mean(per_problem)), "n": len(per_problem),
                                        "ci": stats.wilson_ci(int(sum(per_problem)), len(per_problem))}
            else:
                quality["pass_at_k"] = {"k": n_min, **stats.mean_ci(per_problem, proportion_rng)}
    if rows["correct"].notna().any():
        checked = rows[rows["correct"].notna()]
        quality["decision_accuracy"] = stats.proportion_ci(checked["correct"], checked["example_id"], proportion_rng)
        quality["decisions"] = {d: int((checked["decision"] == d).sum()) for d in metrics.PUBMEDQA_DECISIONS}
        quality["decisions"]["none"] = int(checked["decision"].isna().sum())
    if rows["exact_match_ars"].notna().any():
        matches = rows["exact_match_ars"].dropna().astype(bool)
        quality["exact_match_ars"] = float(matches.mean())
        quality["mismatched_examples"] = sorted(rows.loc[matches.index[~matches.values], "example_id"].astype(str))
    return quality
