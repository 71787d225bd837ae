"""The restricted draft vocabulary (reproduce.runs.vocabulary) and the paper's-regime rows of the report."""

from types import SimpleNamespace

import pytest
import torch

from reproduce import tasks
from reproduce.report.answer import regime_rows
from reproduce.report.sweeps import Sweep, SweepPoint
from reproduce.runs.vocabulary import choose_kept, coverage


def test_choose_kept_has_exactly_size_tokens_special_ones_first():
    frequencies = torch.tensor([0.5, 0.0, 0.2, 0.1, 0.15, 0.05, 0.0, 0.0])
    kept = choose_kept(frequencies, 4, always=[7])
    assert kept.tolist() == [0, 2, 4, 7]  # 7 (say, EOS) is kept though never seen; then the most frequent
    assert kept.tolist() == sorted(kept.tolist()) and len(kept) == 4
    assert choose_kept(frequencies, 100, always=[]).tolist() == list(range(8))  # capped at the vocabulary
    assert coverage(kept, [0, 0, 2, 1]) == 0.75
    assert coverage(kept, [1, 3, 5]) == 0.0  # it can fail


def test_the_corpus_reads_no_evaluation_row():
    """The head is chosen from training rows only: the rows the corpus reads are disjoint from every task's
    evaluation rows (a draft tuned on the test prompts would overstate acceptance)."""
    for name in ("xsum", "pubmedqa"):
        task = tasks.get_task(name)
        assert not set(task.train_rows) & set(task.eval_rows)
        assert len(task.train_rows) > 0
    assert len(tasks.get_task("humaneval").train_rows) == 0  # code comes from the standard library instead


def _sweep(target_runtime):
    sps = SimpleNamespace(label="SpS[qwen-0.5b,K=8]", speedup="4.0x", end_to_end="3.0x")
    return Sweep("paper_regime", "k", "K", "title", "HumanEval", (0, 20), None,
                 (SweepPoint(8, SimpleNamespace(), sps),), True, "greedy", target_runtime)


def test_a_sweep_with_its_own_target_runtime_is_a_paper_regime_row():
    (row,) = regime_rows((_sweep("fast-bf16"),))
    assert row.setting == "HumanEval greedy, the paper's regime (fast-bf16)"
    assert row.regime == "paper" and row.speedup == "4.0x" and not row.verdict.counted and row.paper is None
    assert regime_rows((_sweep(None),)) == ()  # a plain sweep (Figure 1) is not a regime


@pytest.mark.parametrize("draft, error", [
    ({"name": "q", "model": "tiny-random-llama", "vocabulary": 0}, "vocabulary must be an integer >= 1"),
    ({"name": "ngram", "vocabulary": 16}, "vocabulary must be an integer >= 1 on a model draft"),
])
def test_a_bad_vocabulary_is_one_line(draft, error):
    from reproduce.errors import ReproduceError
    from reproduce.runs.config import resolve_config

    data = {"name": "x", "target": {"name": "tiny-random-llama"}, "drafts": [draft],
            "tasks": {"xsum": {"rows": [0, 1], "modes": ["greedy"]}}, "modes": {"greedy": {"temperature": 0}}}
    with pytest.raises(ReproduceError, match=error) as raised:
        resolve_config(data, "test")
    assert "\n" not in str(raised.value)


def test_a_bad_block_target_runtime_is_one_line():
    from reproduce.errors import ReproduceError
    from reproduce.runs.config import resolve_config

    data = {"name": "x", "target": {"name": "tiny-random-llama"}, "drafts": [{"name": "ngram"}],
            "tasks": {"humaneval": {"rows": [0, 1], "modes": ["greedy"]}}, "modes": {"greedy": {"temperature": 0}},
            "sweeps": {"p": {"task": "humaneval", "mode": "greedy", "draft": "ngram", "vary": "k", "values": [2],
                             "rows": [0, 1], "target_runtime": "fastest"}}}
    with pytest.raises(ReproduceError, match="target_runtime must be one of"):
        resolve_config(data, "test")
