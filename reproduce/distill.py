"""A distilled draft for a Llama target, built by the suite on the CPU (`python -m reproduce distill`, `make draft`).

Recipe (what was tried and measured is in notes/draft-experiments.md):
1. Teacher data from the target itself, in the runtime the engine verifies with (FastLlamaLM bf16 here): for each
   training prompt, the target's top-k next-token log-probabilities at *every* prompt position (one prefill call:
   ~10x more teacher positions per CPU-second than generation) and along its own greedy continuation (on-policy:
   the text the draft will be asked to predict). Prompts: XSum and PubMedQA *training* rows (the split is fixed in
   reproduce.tasks and checked here) and, for code, functions with docstrings from the Python standard library
   shaped like HumanEval prompts (HumanEval itself is never used). Two worker processes, one thread each.
2. A restricted-vocabulary head: the N tokens the target emits most (its continuations, then its top
   alternatives, then prompt text). The draft gives probability 0 elsewhere, which the verification rule handles
   losslessly; at inference the prompt's own tokens are added to the head (PromptVocabularyDrafter).
3. The draft is the target's first layers + final norm, the target's (frozen) input embedding and an untied head
   initialised from the kept rows of the target's tied embedding.
4. Loss: cross-entropy against the target's top-k distribution renormalised over the kept vocabulary (sparse
   KL(target || draft) up to a constant), continuation positions weighted up; AdamW with cosine decay, batches of
   right-padded sequences under bf16 autocast, a fixed number of steps (seeded: a rerun builds the same draft up to thread-level
   floating-point order).
The draft is saved as a full-vocabulary Llama (save_pretrained: Hugging Face assisted generation can use it) plus
`kept_tokens.pt` and `distill.json` (recipe, split, held-out log).
"""

from __future__ import annotations

import ast
import copy
import json
import math
import multiprocessing
import random
import re
import sysconfig
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from reproduce import models  # models.load_model looked up at call time (tests replace it)
from reproduce.errors import ReproduceError
from reproduce.fast_target import FastLlamaLM, build_lm, resolve_runtime
from reproduce.models import LoadedModel, cache_dir
from reproduce.tasks import build_prompt_ids, get_task, load_examples

FORMAT_VERSION = 2  # bump when the recipe or file layout changes: a cached draft of another version is rebuilt


@dataclass
class Recipe:
    """Everything that defines a distilled draft (recorded in distill.json)."""

    target: str = "smollm2-135m-instruct"
    runtime: str = "auto"  # the target's runtime for teacher data (its numerics are what acceptance is measured on)
    seed: int = 0
    xsum_rows: int = 480  # training prompts drawn from each source
    pubmedqa_rows: int = 64
    code_prompts: int = 128
    heldout_xsum_rows: tuple[int, int] = (980, 1000)  # XSum training-split rows never trained on: the held-out log
    max_prompt_tokens: int = 400
    max_new_tokens: int = 64
    teacher_top_k: int = 32
    vocab_size: int = 8192
    layers: tuple[int, ...] = (0, 1)
    continuation_weight: float = 4.0  # loss weight of continuation positions vs prompt positions
    steps: int = 900
    batch_size: int = 8
    lr: float = 1e-3
    bf16_autocast: bool = True
    eval_every: int = 100
    workers: int = 2


@dataclass
class TeacherSequence:
    """One training sequence: its ids and the target's top-k next-token log-probs after each of ids[:-1]."""

    source: str  # e.g. "xsum:312", "code:json/decoder.py:JSONObject"
    ids: list[int]  # prompt + the target's greedy continuation
    continuation_start: int  # first position whose next token is a continuation token (len(prompt) - 1)
    teacher_ids: torch.Tensor  # [len(ids) - 1, top_k] int32
    teacher_logprobs: torch.Tensor  # [len(ids) - 1, top_k] float16


# ---- 1. teacher data -----------------------------------------------------------------------------------------


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


# ---- 2./3. the draft -----------------------------------------------------------------------------------------


def check_draftable(target_config, layers: tuple[int, ...]) -> None:
    """A draft is cut from a Llama target's layers: say so in one line before any work."""
    if target_config.model_type != "llama":
        raise ReproduceError(f"distillation starts from a Llama target's layers, got {target_config.model_type!r}")
    if max(layers) >= target_config.num_hidden_layers:
        raise ReproduceError(f"layers {layers}: the target has {target_config.num_hidden_layers} layers")


def build_draft(target_model, layers: tuple[int, ...] = (0, 1)):
    """A Llama with the target's embedding (frozen), the given decoder layers, the final norm and an untied head."""
    from transformers import LlamaForCausalLM

    check_draftable(target_model.config, layers)
    config = copy.deepcopy(target_model.config)
    config.num_hidden_layers = len(layers)
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in layers]
    config.tie_word_embeddings = False
    draft = LlamaForCausalLM(config)
    draft.model.embed_tokens.load_state_dict(target_model.model.embed_tokens.state_dict())
    draft.model.norm.load_state_dict(target_model.model.norm.state_dict())
    for index, source in enumerate(layers):
        draft.model.layers[index].load_state_dict(target_model.model.layers[source].state_dict())
    draft.lm_head.weight = torch.nn.Parameter(target_model.lm_head.weight.detach().clone())
    draft.model.embed_tokens.weight.requires_grad_(False)
    draft.lm_head.weight.requires_grad_(False)  # only the kept rows train, as their own parameter (see train)
    return draft.float()


# ---- 4. training ---------------------------------------------------------------------------------------------


def make_batch(sequences: list[TeacherSequence], kept_index: torch.Tensor, continuation_weight: float):
    """Right-padded inputs [B, L], teacher ids in kept indices [B, L, top_k] (0 where outside), teacher probs
    renormalised over the kept vocabulary [B, L, top_k], and position weights [B, L] (0 on padding)."""
    length = max(len(s.ids) - 1 for s in sequences)
    top_k = sequences[0].teacher_ids.shape[1]
    inputs = torch.zeros(len(sequences), length, dtype=torch.long)
    ids = torch.zeros(len(sequences), length, top_k, dtype=torch.long)
    probs = torch.zeros(len(sequences), length, top_k)
    weights = torch.zeros(len(sequences), length)
    for b, s in enumerate(sequences):
        n = len(s.ids) - 1
        inputs[b, :n] = torch.tensor(s.ids[:-1])
        index = kept_index[s.teacher_ids.long()]  # -1 outside the kept vocabulary
        p = s.teacher_logprobs.float().exp() * (index >= 0)
        probs[b, :n] = p / p.sum(-1, keepdim=True).clamp(min=1e-9)
        ids[b, :n] = index.clamp(min=0)
        weights[b, :n] = 1.0
        weights[b, s.continuation_start : n] = continuation_weight
    return inputs, ids, probs, weights


def draft_logprobs(draft, head: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """Log-probabilities over the kept vocabulary [B, L, len(kept)]."""
    hidden = draft.model(input_ids=inputs).last_hidden_state
    return F.linear(hidden, head).log_softmax(-1)


@torch.no_grad()
def evaluate(draft, head, sequences: list[TeacherSequence], kept_index: torch.Tensor) -> dict:
    """Held-out, continuation positions only (where drafting happens): sparse KL(target || draft) over the kept
    vocabulary, top-1 agreement with the target's greedy token (= acceptance at T=0 of a one-token draft), and
    the share of those tokens the kept vocabulary covers."""
    kl, agree, covered, total = 0.0, 0, 0, 0
    for s in sequences:
        inputs, ids, probs, _ = make_batch([s], kept_index, 1.0)
        logprobs = draft_logprobs(draft, head, inputs)[0, s.continuation_start :]  # [n, kept]
        probs, ids = probs[0, s.continuation_start :], ids[0, s.continuation_start :]
        teacher_entropy = (probs * probs.clamp(min=1e-9).log()).sum(-1)
        kl += (teacher_entropy - (probs * logprobs.gather(-1, ids)).sum(-1)).sum().item()
        labels = kept_index[torch.tensor(s.ids[s.continuation_start + 1 :])]
        agree += (logprobs.argmax(-1) == labels).sum().item()
        covered += (labels >= 0).sum().item()
        total += len(labels)
    return {"heldout_kl": kl / total, "heldout_top1": agree / total, "heldout_coverage": covered / total}


def train(draft, sequences: list[TeacherSequence], heldout: list[TeacherSequence], kept: torch.Tensor,
          vocab_size: int, recipe: Recipe) -> tuple[torch.Tensor, list[dict]]:
    """AdamW on the weighted sparse-KL loss for recipe.steps batches. Returns (trained head rows, log)."""
    torch.manual_seed(recipe.seed)
    rng = random.Random(recipe.seed)
    kept_index = torch.full((vocab_size,), -1, dtype=torch.long)
    kept_index[kept] = torch.arange(len(kept))
    head = torch.nn.Parameter(draft.lm_head.weight.detach()[kept].clone())  # [len(kept), hidden]
    trainable = [p for p in draft.parameters() if p.requires_grad] + [head]
    optimizer = torch.optim.AdamW(trainable, lr=recipe.lr, weight_decay=0.0)
    warmup = max(1, recipe.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup) * (
        0.1 + 0.45 * (1 + math.cos(math.pi * min(step, recipe.steps) / recipe.steps))))
    start = time.perf_counter()

    def log_entry(step: int, loss: float | None) -> dict:
        draft.eval()
        entry = {"step": step, "minutes": round((time.perf_counter() - start) / 60, 2), "train_loss": loss,
                 **evaluate(draft, head, heldout, kept_index)}
        tqdm.write(json.dumps(entry))
        return entry

    log = [log_entry(0, None)]
    order: list[int] = []
    bar = tqdm(range(1, recipe.steps + 1), desc="train draft")
    for step in bar:
        if len(order) < recipe.batch_size:  # epochs in a fresh seeded order; sort a batch by length to pad less
            order += rng.sample(range(len(sequences)), len(sequences))
        batch = [sequences[i] for i in order[: recipe.batch_size]]
        del order[: recipe.batch_size]
        inputs, ids, probs, weights = make_batch(batch, kept_index, recipe.continuation_weight)
        draft.train()
        # bf16 autocast (fp32 master weights): 2-2.5x faster steps on this AVX512-BF16 CPU than fp32
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=recipe.bf16_autocast):
            logprobs = draft_logprobs(draft, head, inputs).float()
        loss = -((probs * logprobs.gather(-1, ids)).sum(-1) * weights).sum() / weights.sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if step % recipe.eval_every == 0 or step == recipe.steps:
            log.append(log_entry(step, round(loss.item(), 4)))
    return head.detach(), log


# ---- the command ---------------------------------------------------------------------------------------------


def distilled_draft_dir(target_name: str) -> Path:
    """Where the distilled draft for `target_name` lives (outside the repository)."""
    return cache_dir() / "drafts" / (re.sub(r"[^A-Za-z0-9_.-]+", "--", target_name) + "-distilled")


def teacher_data_file(recipe: Recipe, runtime: str) -> Path:
    """Cache file of the teacher data, keyed by every setting that changes it."""
    import hashlib

    key = [FORMAT_VERSION, recipe.target, runtime, recipe.seed, recipe.xsum_rows, recipe.pubmedqa_rows,
           recipe.code_prompts, recipe.heldout_xsum_rows, recipe.max_prompt_tokens, recipe.max_new_tokens,
           recipe.teacher_top_k]
    digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:12]
    return distilled_draft_dir(recipe.target).parent / "teacher-data" / f"{digest}.pt"


def is_built(path: Path) -> bool:
    try:
        return json.loads((path / "distill.json").read_text())["format_version"] == FORMAT_VERSION
    except (OSError, KeyError, ValueError):
        return False


def distill(recipe: Recipe, out: Path | None = None, force: bool = False) -> Path:
    """Build (or find) the distilled draft for recipe.target. Returns its directory."""
    out = Path(out) if out else distilled_draft_dir(recipe.target)
    if is_built(out) and not force:
        print(f"distilled draft already built: {out} (--force rebuilds it)")
        return out
    begin = time.perf_counter()
    target = models.load_model(recipe.target)
    runtime = resolve_runtime(recipe.runtime, target.model)
    check_draftable(target.model.config, recipe.layers)  # before minutes of data
    data_file = teacher_data_file(recipe, runtime)
    if data_file.exists():  # the expensive part; a rebuild with other training settings reuses it
        heldout, sequences = torch.load(data_file, weights_only=False)
        print(f"teacher data reused from {data_file}")
    else:
        train_prompts, heldout_prompts = training_prompts(recipe, target.tokenizer)
        heldout = collect_teacher_data(recipe, runtime, heldout_prompts, "held-out teacher data")
        sequences = collect_teacher_data(recipe, runtime, train_prompts, "teacher data")
        data_file.parent.mkdir(parents=True, exist_ok=True)
        torch.save((heldout, sequences), data_file)
    data_minutes = (time.perf_counter() - begin) / 60
    always = [t for t in (target.tokenizer.all_special_ids if target.tokenizer else []) if t < target.vocab_size]
    kept = choose_vocabulary(sequences, recipe.vocab_size, always, target.vocab_size)
    torch.manual_seed(recipe.seed)
    draft = build_draft(target.model, recipe.layers)
    torch.set_num_threads(recipe.workers)
    head, log = train(draft, sequences, heldout, kept, target.vocab_size, recipe)
    supervised = sum(len(s.ids) - 1 for s in sequences)
    on_policy = sum(len(s.ids) - 1 - s.continuation_start for s in sequences)
    record = {
        "recipe": asdict(recipe),
        "target_runtime": runtime,
        "split": {"train_sources": [s.source for s in sequences], "heldout_sources": [s.source for s in heldout],
                  "never_used": "evaluation rows of every task (reproduce.tasks), all of HumanEval"},
        "teacher_positions": supervised, "on_policy_positions": on_policy,
        "data_minutes": round(data_minutes, 2),
        "total_minutes": round((time.perf_counter() - begin) / 60, 2),
        "log": log,
    }
    save_distilled(out, draft, head, kept, target.tokenizer, record)
    print(f"distilled draft saved to {out}: {record['total_minutes']} min, held-out top-1 "
          f"{log[-1]['heldout_top1']:.3f}, KL {log[-1]['heldout_kl']:.3f}")
    return out


def save_distilled(out: Path, draft, head: torch.Tensor, kept: torch.Tensor, tokenizer, record: dict) -> None:
    """A full-vocabulary Llama (only the kept rows of its head were trained) + kept_tokens.pt + distill.json."""
    with torch.no_grad():
        draft.lm_head.weight[kept] = head
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    draft.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    torch.save(kept, out / "kept_tokens.pt")
    (out / "distill.json").write_text(json.dumps({"format_version": FORMAT_VERSION, **record}, indent=1))


# ---- loading for the engine ----------------------------------------------------------------------------------


class RestrictedFastLM(FastLlamaLM):
    """FastLlamaLM whose head holds only some tokens' rows; the logits of the others are -inf (probability 0).

    `set_extra_tokens` adds the rows of further tokens (e.g. a prompt's) from the saved full head."""

    def restrict(self, kept: torch.Tensor, full_head: torch.Tensor, vocab_size: int) -> "RestrictedFastLM":
        self.base_kept, self.full_head, self.full_vocab_size = kept, full_head, vocab_size
        self._set_head(kept)
        return self

    def _set_head(self, kept: torch.Tensor) -> None:
        head = self.full_head[kept]
        if self.linear_mode != "fp32":
            head = head.to(torch.bfloat16).float()  # the rounding from_hf applies to every weight
        self.head_bf16 = head.to(torch.bfloat16).contiguous() if self.linear_mode != "fp32" else None
        self.head_fp32 = head.contiguous() if self.linear_mode != "bf16" else None
        self.kept = kept

    def set_extra_tokens(self, token_ids: list[int]) -> None:
        tokens = torch.tensor(sorted(set(token_ids)), dtype=torch.long)
        extra = tokens[~torch.isin(tokens, self.base_kept)]
        self._set_head(torch.cat([self.base_kept, extra]) if len(extra) else self.base_kept)

    def forward(self, token_ids: list[int], last_only: bool = False) -> torch.Tensor:
        kept_logits = super().forward(token_ids, last_only)
        logits = torch.full((kept_logits.shape[0], self.full_vocab_size), float("-inf"))
        logits[:, self.kept] = kept_logits
        return logits


def load_distilled(path: Path, vocab_size: int, runtime: str = "auto"):
    """(LoadedModel, resolved runtime, factory of fresh restricted-head LMs) for a distilled draft directory."""
    path = Path(path)
    if not is_built(path):
        raise ReproduceError(f"no distilled draft at {path}: build it with `make draft` "
                             "(python -m reproduce distill; ~25 min on 2 CPU cores)")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(path) if (path / "tokenizer_config.json").exists() else None
    loaded = LoadedModel("distilled", model, tokenizer, str(path))
    runtime = resolve_runtime(runtime, loaded.model)
    if runtime == "hf":  # e.g. on a GPU: the full-vocabulary model (kept rows trained, the rest the target's)
        return loaded, runtime, lambda: build_lm(loaded.model, vocab_size, runtime)
    kept = torch.load(path / "kept_tokens.pt")
    full_head = loaded.model.lm_head.weight.detach()[:vocab_size].float()

    def new_lm() -> RestrictedFastLM:
        lm = RestrictedFastLM.from_hf(loaded.model, vocab_size, linear_mode=runtime.removeprefix("fast-"))
        return lm.restrict(kept, full_head, vocab_size)

    return loaded, runtime, new_lm
