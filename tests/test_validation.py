"""Bad input gives one clear line that names the fix, never a traceback.

Method: each bad input is fed twice. At the library level we assert the ReproduceError's message is a single line
containing the words that tell the user what to do. Through the CLI (`main([...])`, captured with capsys) we assert
exit code 2, empty stdout, and a stderr of exactly one line starting with `error:`. Inputs that need no model are
checked with model loading replaced by a function that fails the test, which proves they are rejected before any
model loads. The hub is put in offline mode so an unknown model name fails in well under a second instead of
retrying the network for ~48 s (measured on this machine).
"""

from __future__ import annotations

import time

import pytest
import torch

import reproduce.engine.models
from reproduce.cli import main
from reproduce.engine.decoding import autoregressive_decode, speculative_decode
from reproduce.engine.drafters import ModelDrafter
from reproduce.engine.lm import CachedLM
from reproduce.engine.models import (
    LoadedModel,
    load_model,
    shared_vocab_size,
    tiny_random_model,
)
from reproduce.engine.sampling import SamplingParams
from reproduce.errors import ReproduceError


@pytest.fixture
def hub_offline(monkeypatch):
    """huggingface_hub reads HF_HUB_OFFLINE once at import, so the module constant is patched too."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def no_model_loading(monkeypatch):
    def refuse(name, *args, **kwargs):
        raise AssertionError(f"a model ({name}) was loaded before the input was validated")

    monkeypatch.setattr(reproduce.engine.models, "load_model", refuse)


@pytest.fixture(scope="module")
def tiny_target():
    return tiny_random_model("llama", vocab_size=16)


def assert_one_line(error: pytest.ExceptionInfo, *fix_words: str) -> None:
    message = str(error.value)
    assert message and "\n" not in message
    for word in fix_words:
        assert word in message, f"{word!r} not in {message!r}"


def run_cli(capsys, argv: list[str]) -> str:
    """Run the CLI on bad input; return its single stderr line after checking the error contract."""
    exit_code = main(argv)
    captured = capsys.readouterr()
    assert exit_code == 2
    assert captured.out == ""
    assert "Traceback" not in captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    return lines[0]


# ---- library level ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, fix",
    [
        (dict(temperature=-0.5), ">= 0"),
        (dict(temperature=float("nan")), ">= 0"),
        (dict(top_p=0.0), "(0, 1]"),
        (dict(top_p=1.5), "(0, 1]"),
        (dict(top_k=-1), ">= 0"),
    ],
)
def test_sampling_params_reject_bad_values(kwargs, fix):
    with pytest.raises(ReproduceError) as error:
        SamplingParams(**kwargs)
    assert_one_line(error, fix)


@pytest.mark.parametrize("k", [0, -1, 2.5, "4"])
def test_speculative_decode_rejects_bad_k(tiny_target, k):
    target = CachedLM(tiny_target.model, 16)
    drafter = ModelDrafter(tiny_target.model, 16)
    with pytest.raises(ReproduceError) as error:
        speculative_decode(target, drafter, [1, 2], k, 4, SamplingParams(), torch.Generator().manual_seed(0))
    assert_one_line(error, "integer >= 1")


def test_decoders_reject_empty_prompt(tiny_target):
    target = CachedLM(tiny_target.model, 16)
    generator = torch.Generator().manual_seed(0)
    with pytest.raises(ReproduceError) as error:
        autoregressive_decode(target, [], 4, SamplingParams(), generator)
    assert_one_line(error, "non-empty --prompt")
    with pytest.raises(ReproduceError) as error:
        speculative_decode(target, ModelDrafter(tiny_target.model, 16), [], 2, 4, SamplingParams(), generator)
    assert_one_line(error, "non-empty --prompt")


def test_decoders_reject_prompt_ids_outside_vocabulary(tiny_target):
    target = CachedLM(tiny_target.model, 16)
    with pytest.raises(ReproduceError) as error:
        autoregressive_decode(target, [1, 16], 4, SamplingParams(), torch.Generator().manual_seed(0))
    assert_one_line(error, "[0, 16)", "another model")


def test_unknown_model_fails_fast_offline(hub_offline):
    start = time.perf_counter()
    with pytest.raises(ReproduceError) as error:
        load_model("no-such-org/no-such-model")
    assert time.perf_counter() - start < 10
    assert_one_line(error, "no-such-org/no-such-model", "offline alias", "smollm2-135m-instruct")


def test_missing_gguf_file(tmp_path):
    missing = tmp_path / "absent.gguf"
    with pytest.raises(ReproduceError) as error:
        load_model(str(missing))
    assert_one_line(error, "not found", str(missing))


def test_unknown_tiny_architecture():
    with pytest.raises(ReproduceError) as error:
        load_model("tiny-random-bert")
    assert_one_line(error, "llama")


def test_mismatched_vocabularies():
    target = tiny_random_model("llama", vocab_size=16)
    draft = tiny_random_model("llama", vocab_size=20)
    with pytest.raises(ReproduceError) as error:
        shared_vocab_size(target, draft)
    assert_one_line(error, "different vocabularies", "20 vs 16", "pick a draft")


def byte_level_bpe_tokenizer(vocab_size: int = 300):
    """A GPT-2-style tokenizer (byte-level BPE) trained offline on one sentence: a real, different tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(["The road has been shut from the roundabout with the Beach Ballroom."], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>")


@pytest.mark.slow
def test_mismatched_real_tokenizers(smollm2):
    """SmolLM2's tokenizer against a GPT-2-style one: a different token -> id map, so drafting is impossible."""
    gpt2_style = byte_level_bpe_tokenizer()
    draft = LoadedModel("gpt2-style", tiny_random_model("gpt2", vocab_size=len(gpt2_style)).model, gpt2_style, "test")
    with pytest.raises(ReproduceError) as error:
        shared_vocab_size(smollm2, draft)
    assert_one_line(error, "different tokenizers", f"{len(gpt2_style)} vs 49152", "--draft ngram")


# ---- through the CLI --------------------------------------------------------------------------------------------

PROMPT = ["--prompt", "Summarize: the road was shut."]


@pytest.mark.parametrize(
    "argv, fix",
    [
        (["--k", "0", *PROMPT], "--k"),
        (["--k", "-3", *PROMPT], ">= 1"),
        (["--k", "2.5", *PROMPT], "invalid int value"),
        (["--temperature", "-1", *PROMPT], ">= 0"),
        (["--top-p", "0", *PROMPT], "(0, 1]"),
        (["--top-p", "1.5", *PROMPT], "(0, 1]"),
        (["--top-k", "-2", *PROMPT], ">= 0"),
        (["--max-new-tokens", "0", *PROMPT], ">= 1"),
        (["--ngram-size", "0", *PROMPT], ">= 1"),
        (["--prompt", ""], "non-empty --prompt"),
        (["--prompt", "   "], "non-empty --prompt"),
        (["--prompt-ids", ""], "--prompt-ids"),
        (["--prompt-ids", "1 two 3"], "integers"),
        ([], "--prompt"),  # neither --prompt nor --prompt-ids
        (["--prompt", "x", "--prompt-ids", "1"], "not allowed with"),
        (["--no-such-flag", *PROMPT], "unrecognized arguments"),
    ],
)
def test_cli_rejects_bad_input_before_loading_models(capsys, no_model_loading, argv, fix):
    line = run_cli(capsys, ["generate", *argv])
    assert fix in line


def test_cli_requires_a_command(capsys):
    assert "--help" in run_cli(capsys, [])


def test_cli_unknown_model(capsys, hub_offline):
    line = run_cli(capsys, ["generate", "--target", "no-such-org/no-such-model", *PROMPT])
    assert "unknown model 'no-such-org/no-such-model'" in line and "offline alias" in line


def test_cli_missing_gguf_file(capsys, tmp_path):
    line = run_cli(capsys, ["generate", "--target", str(tmp_path / "absent.gguf"), *PROMPT])
    assert "not found" in line


def test_cli_text_prompt_for_model_without_tokenizer(capsys):
    line = run_cli(capsys, ["generate", "--target", "tiny-random-llama", "--threads", "1", *PROMPT])
    assert "--prompt-ids" in line


def test_cli_prompt_ids_outside_vocabulary(capsys):
    line = run_cli(capsys, ["generate", "--target", "tiny-random-llama", "--threads", "1", "--prompt-ids", "1 99"])
    assert "[0, 16)" in line


def test_cli_mismatched_draft_vocabulary(capsys, monkeypatch):
    """No hub name has a 20-token vocabulary offline, so the loader is taught one: 'tiny-vocab-20'."""
    real_load_model = reproduce.engine.models.load_model

    def load_model_with_vocab_20(name, *args, **kwargs):
        if name == "tiny-vocab-20":
            return tiny_random_model("llama", vocab_size=20)
        return real_load_model(name, *args, **kwargs)

    monkeypatch.setattr(reproduce.engine.models, "load_model", load_model_with_vocab_20)
    line = run_cli(
        capsys, ["generate", "--target", "tiny-random-llama", "--draft", "tiny-vocab-20", "--prompt-ids", "1 2"]
    )
    assert "different vocabularies" in line and "pick a draft" in line


def test_cli_chat_without_chat_template(capsys, monkeypatch):
    """A tokenizer with no chat template (the GPT-2-style one) cannot honour an explicit --chat."""
    tokenizer = byte_level_bpe_tokenizer()
    model = tiny_random_model("gpt2", vocab_size=len(tokenizer)).model
    gpt2_style = LoadedModel("gpt2-style", model, tokenizer, "test")
    monkeypatch.setattr(reproduce.engine.models, "load_model", lambda name, *args, **kwargs: gpt2_style)
    line = run_cli(capsys, ["generate", "--target", "gpt2-style", "--chat", "--prompt", "The road"])
    assert "no chat template" in line and "drop --chat" in line


# ---- the distilled draft -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, fix", [
    (["distill", "--steps", "0"], "--steps must be positive"),
    (["distill", "--batch-size", "-1"], "--batch-size must be positive"),
])
def test_cli_distill_rejects_bad_recipe_before_loading(capsys, no_model_loading, tmp_path, argv, fix):
    assert fix in run_cli(capsys, argv + ["--out", str(tmp_path / "draft")])


def test_cli_distill_needs_a_llama_target(capsys, tmp_path):
    line = run_cli(capsys, ["distill", "--target", "tiny-random-gpt2", "--out", str(tmp_path / "draft")])
    assert "Llama target" in line


def test_missing_distilled_draft_names_make_draft(monkeypatch, tmp_path, tiny_target):
    from reproduce.engine.drafters import build_drafter

    monkeypatch.setenv("REPRODUCE_CACHE", str(tmp_path))
    with pytest.raises(ReproduceError) as error:
        build_drafter("distilled", tiny_target)
    assert_one_line(error, "make draft", "python -m reproduce distill")


def test_hybrid_draft_needs_a_model_draft(tiny_target):
    from reproduce.engine.drafters import build_drafter

    with pytest.raises(ReproduceError) as error:
        build_drafter("ngram+ngram", tiny_target)
    assert_one_line(error, "ngram+distilled")


@pytest.mark.parametrize("command", ["analyse", "report"])
def test_analyse_and_report_of_a_directory_without_a_run(capsys, tmp_path, command):
    """`analyse` read manifest.json before checking it was there, and ended in a FileNotFoundError traceback."""
    line = run_cli(capsys, [command, str(tmp_path)])
    assert "holds no experiment results" in line and "python -m reproduce run --profile NAME" in line
