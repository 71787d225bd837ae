"""Teacher data for the distilled draft: the training prompts and the target's top-k log-probs (the recipe is
recipe.py).

Prompts come only from training rows (the split is fixed in reproduce.tasks and checked here) and, for code, from
Python standard-library functions shaped like HumanEval prompts. Teacher data is cached per recipe and runtime, so
a rebuild with other training settings skips it. The recipe as a whole is described in train.py.
"""

from __future__ import annotations

import ast
import json
import multiprocessing
import random
import sysconfig
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from reproduce.engine import (
    models,  # models.load_model looked up at call time (tests replace it)
)
from reproduce.engine.distilled import FORMAT_VERSION, distilled_draft_dir
from reproduce.engine.runtime import build_lm
from reproduce.distill.recipe import Recipe
from reproduce.errors import ReproduceError
from reproduce.tasks import build_prompt_ids, get_task, load_examples


@dataclass
class TeacherSequence:
    """One training sequence: its ids and the target's top-k next-token log-probs after each of ids[:-1]."""

    source: str  # e.g. "xsum:312", "code:json/decoder.py:JSONObject"
    ids: list[int]  # prompt + the target's greedy continuation
    continuation_start: int  # first position whose next token is a continuation token (len(prompt) - 1)
    teacher_ids: torch.Tensor  # [len(ids) - 1, top_k] int32
    teacher_logprobs: torch.Tensor  # [len(ids) - 1, top_k] float16


def check_train_rows(task: str, rows) -> None:
    """A draft must never see evaluation prompts: only the task's recorded training rows are allowed."""
    outside = sorted(set(rows) - set(get_task(task).train_rows))
    if outside:
        raise ReproduceError(f"rows {outside[:5]} are not {task} training rows: use rows in {get_task(task).train_rows}")


def code_prompts(tokenizer, count: int, seed: int, max_prompt_tokens: int) -> list[tuple[str, list[int]]]:
    """HumanEval-shaped prompts from the standard library: the code before a function with a docstring, then
    its signature and docstring (the completion is the body). Deterministic for a seed and Python version."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    candidates = []
    for path in sorted(stdlib.glob("*.py")) + sorted(stdlib.glob("*/*.py")):
        if "test" in path.parts[-2] or path.name.startswith("test"):
            continue
        try:
            source = path.read_text()
            tree = ast.parse(source)
        except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
            continue
        lines = source.splitlines(keepends=True)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and ast.get_docstring(node) and node.body[1:]:
                doc = node.body[0]
                candidates.append((f"code:{path.relative_to(stdlib)}:{node.name}",
                                   "".join(lines[max(0, node.lineno - 40) : doc.end_lineno])))
    if len(candidates) < count:
        raise ReproduceError(f"only {len(candidates)} standard-library functions found under {stdlib}, need {count}")
    prompts = []
    for name, text in random.Random(seed).sample(candidates, count):
        ids = tokenizer(text)["input_ids"][-max_prompt_tokens:]  # keep the function, cut the file context
        prompts.append((name, ids))
    return prompts


def training_prompts(recipe: Recipe, tokenizer) -> tuple[list[tuple[str, list[int]]], list[tuple[str, list[int]]]]:
    """(training prompts, held-out prompts) as (source, ids). Rows are drawn with the recipe's seed from the
    tasks' training rows only."""
    rng = random.Random(recipe.seed)
    heldout_rows = list(range(*recipe.heldout_xsum_rows))
    check_train_rows("xsum", heldout_rows)
    xsum_pool = [r for r in get_task("xsum").train_rows if r not in heldout_rows]
    picked = {"xsum": sorted(rng.sample(xsum_pool, recipe.xsum_rows)),
              "pubmedqa": sorted(rng.sample(list(get_task("pubmedqa").train_rows), recipe.pubmedqa_rows))}
    train = []
    for task, rows in picked.items():
        check_train_rows(task, rows)
        train += [(f"{task}:{e.row}", build_prompt_ids(e, tokenizer, recipe.max_prompt_tokens))
                  for e in load_examples(task, rows)]
    train += code_prompts(tokenizer, recipe.code_prompts, recipe.seed, recipe.max_prompt_tokens)
    heldout = [(f"xsum:{e.row}", build_prompt_ids(e, tokenizer, recipe.max_prompt_tokens))
               for e in load_examples("xsum", heldout_rows)]
    return train, heldout


@torch.inference_mode()
def teacher_sequence(target_lm, source: str, prompt_ids: list[int], max_new_tokens: int, top_k: int,
                     eos_token_id: int | None) -> TeacherSequence:
    """The target's greedy continuation of the prompt and its top-k log-probs at every position."""
    target_lm.reset()
    rows = [target_lm.forward(prompt_ids, last_only=False)]  # [len(prompt), V]: after each prompt prefix
    ids = list(prompt_ids)
    while True:
        token = int(rows[-1][-1].argmax())
        ids.append(token)
        if token == eos_token_id or len(ids) - len(prompt_ids) >= max_new_tokens:
            break
        rows.append(target_lm.forward([token]))
    top = torch.cat(rows).log_softmax(-1).topk(top_k, dim=-1)  # [len(ids) - 1, top_k]
    return TeacherSequence(source, ids, len(prompt_ids) - 1, top.indices.int(), top.values.half())


_WORKER = {}


def _init_worker(target: str, runtime: str) -> None:
    torch.set_num_threads(1)  # one process per core beats one process on two threads for batch-1 decoding
    loaded = models.load_model(target)
    _WORKER.update(lm=build_lm(loaded.model, loaded.vocab_size, runtime), eos=loaded.eos_token_id)


def _teacher_job(job) -> TeacherSequence:
    source, prompt_ids, max_new_tokens, top_k = job
    return teacher_sequence(_WORKER["lm"], source, prompt_ids, max_new_tokens, top_k, _WORKER["eos"])


def collect_teacher_data(recipe: Recipe, runtime: str, prompts, desc: str) -> list[TeacherSequence]:
    """Teacher sequences for `prompts`, computed by `recipe.workers` processes, in prompt order."""
    jobs = [(source, ids, recipe.max_new_tokens, recipe.teacher_top_k) for source, ids in prompts]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(recipe.workers, mp_context=context, initializer=_init_worker,
                             initargs=(recipe.target, runtime)) as pool:
        return list(tqdm(pool.map(_teacher_job, jobs, chunksize=1), total=len(jobs), desc=desc))


def choose_vocabulary(sequences: list[TeacherSequence], size: int, always: list[int], vocab_size: int) -> torch.Tensor:
    """Sorted ids of the `size` tokens the target most likely emits: its continuation tokens first, then its
    top-8 alternatives there, then its top-1 at prompt positions, then prompt tokens, plus `always`."""
    counts = torch.zeros(vocab_size, dtype=torch.float64)

    def add(ids, weight):
        ids = torch.as_tensor(ids, dtype=torch.long).flatten()
        counts.index_add_(0, ids, torch.full((len(ids),), weight, dtype=torch.float64))

    for s in sequences:  # each source's weight makes it a tie-break for the one before
        start = s.continuation_start
        add(s.ids[start + 1 :], 1e9)
        add(s.teacher_ids[start:, :8], 1e6)
        add(s.teacher_ids[:start, 0], 1e3)
        add(s.ids, 1.0)
    counts[torch.tensor(always, dtype=torch.long)] = float("inf")
    return counts.topk(min(size, vocab_size)).indices.sort().values


def teacher_data_file(recipe: Recipe, runtime: str) -> Path:
    """Cache file of the teacher data, keyed by every setting that changes it."""
    import hashlib

    key = [FORMAT_VERSION, recipe.target, runtime, recipe.seed, recipe.xsum_rows, recipe.pubmedqa_rows,
           recipe.code_prompts, recipe.heldout_xsum_rows, recipe.max_prompt_tokens, recipe.max_new_tokens,
           recipe.teacher_top_k]
    digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:12]
    return distilled_draft_dir(recipe.target).parent / "teacher-data" / f"{digest}.pt"
