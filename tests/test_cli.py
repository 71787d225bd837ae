"""`python -m reproduce generate` end to end.

Method: call `main([...])` in-process and parse what it prints. Tiny random models (no tokenizer, so prompts are
given as token ids) check the output contract and properties that must hold exactly: a target drafting for itself
has acceptance 1.0; at temperature 0 SpS emits exactly ArS's tokens; the same seed gives the same tokens. One slow
test runs the real offline SmolLM2 target on text through its chat template.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from reproduce.cli import main

TINY = ["generate", "--target", "tiny-random-llama", "--threads", "1"]


def run_json(capsys, argv: list[str]) -> dict:
    """Run the CLI with --json; check it printed exactly one JSON object and nothing on stderr."""
    assert main([*argv, "--json"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert len(lines) == 1, captured.out
    assert "error" not in captured.err
    return json.loads(lines[0])


def test_target_as_its_own_draft_accepts_everything(capsys):
    record = run_json(capsys, [*TINY, "--draft", "target", "--k", "3", "--temperature", "0.8", "--top-p", "0.9",
                               "--max-new-tokens", "12", "--prompt-ids", "1 2 3", "--seed", "5"])
    assert record["acceptance_rate"] == 1.0
    assert record["alpha"] == pytest.approx(1.0)  # sum_x min(target(x), target(x)) = 1
    assert record["accepted_per_step"] == record["proposed_per_step"]
    assert sum(record["proposed_per_step"]) > 0
    assert record["prompt_ids"] == [1, 2, 3]
    assert 0 < len(record["sps_tokens"]) <= 12 and 0 < len(record["ars_tokens"]) <= 12
    assert record["text"] is None  # tiny models have no tokenizer
    settings = dict(record["settings"])
    assert settings.pop("runtime").startswith("fast-")  # auto: a Llama on a CPU runs in FastLlamaLM (the probe picks its mode)
    assert settings == {"target": "tiny-random-llama", "draft": "target", "k": 3, "temperature": 0.8,
                        "top_p": 0.9, "top_k": 0, "seed": 5, "max_new_tokens": 12}
    assert record["speedup"] == pytest.approx(record["ars_ms_per_token"] / record["sps_ms_per_token"])


def test_ngram_draft_is_lossless_at_temperature_zero(capsys):
    # A repetitive prompt, so prompt lookup finds n-grams to propose.
    record = run_json(capsys, [*TINY, "--draft", "ngram", "--k", "4", "--temperature", "0", "--max-new-tokens", "24",
                               "--prompt-ids", "1 2 3 4 1 2 3 4 1 2 3"])
    assert record["sps_tokens"] == record["ars_tokens"]
    assert sum(record["proposed_per_step"]) > 0
    accepted, proposed = sum(record["accepted_per_step"]), sum(record["proposed_per_step"])
    assert record["acceptance_rate"] == pytest.approx(accepted / proposed)
    assert len(record["sps_tokens"]) == len(record["accepted_per_step"]) + accepted  # each call adds accepted + 1


def test_same_seed_same_tokens_other_seed_other_tokens(capsys):
    def tokens(seed: int) -> tuple[list[int], list[int]]:
        record = run_json(capsys, [*TINY, "--draft", "target", "--temperature", "1", "--top-p", "1",
                                   "--max-new-tokens", "32", "--prompt-ids", "1 2 3", "--seed", str(seed)])
        return record["sps_tokens"], record["ars_tokens"]

    first = tokens(7)
    assert tokens(7) == first
    assert tokens(8) != first


def test_text_report_without_tokenizer_prints_token_ids(capsys):
    assert main([*TINY, "--draft", "target", "--max-new-tokens", "8", "--prompt-ids", "1 2 3"]) == 0
    out = capsys.readouterr().out
    first_line = out.splitlines()[0]
    assert first_line.startswith("tokens: ") and all(tok.isdigit() for tok in first_line.split()[1:])
    assert "acceptance 1.000" in out and "speedup:" in out and "ms/token" in out


def test_help_exits_zero(capsys):
    assert main(["generate", "--help"]) == 0
    assert "--draft" in capsys.readouterr().out


def test_python_dash_m_entry_point():
    """`python -m reproduce` reaches the same main and turns its return value into the exit code."""
    result = subprocess.run([sys.executable, "-m", "reproduce", "generate", "--k", "0", "--prompt", "x"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --k (tokens drafted per target call) must be >= 1, got 0"


@pytest.mark.slow
def test_real_offline_target_greedy_ngram(capsys):
    record = run_json(capsys, ["generate", "--target", "smollm2-135m-instruct", "--draft", "ngram", "--k", "4",
                               "--temperature", "0", "--max-new-tokens", "16", "--threads", "1", "--prompt",
                               "Repeat after me: the road has been shut from the roundabout with the Beach Ballroom."])
    assert record["sps_tokens"] == record["ars_tokens"]
    assert len(record["sps_tokens"]) > 0
    assert record["text"].strip()
    # The chat template is applied by default to an instruct model: the prompt opens with <|im_start|> (id 1);
    # --no-chat feeds the bare text, which the chat prompt contains.
    assert record["prompt_ids"][0] == 1
    bare = run_json(capsys, ["generate", "--no-chat", "--draft", "ngram", "--max-new-tokens", "1", "--threads", "1",
                             "--prompt", record["prompt"]])
    assert bare["prompt_ids"][0] != 1
    assert len(bare["prompt_ids"]) < len(record["prompt_ids"])
