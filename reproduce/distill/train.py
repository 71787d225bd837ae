"""Training a distilled draft for a Llama target, built by the suite on the CPU (`python -m reproduce distill`, `make draft`).

Recipe (what was tried and measured is in notes/draft-experiments.md):
1. Teacher data from the target itself, in the runtime the engine verifies with (FastLlamaLM bf16 here): for each
   training prompt, the target's top-k next-token log-probabilities at *every* prompt position (one prefill call:
   ~10x more teacher positions per CPU-second than generation) and along its own greedy continuation (on-policy:
   the text the draft will be asked to predict). Prompts: XSum and PubMedQA *training* rows (the split is fixed in
   reproduce.tasks and checked here) and, for code, functions with docstrings from the Python standard library
   shaped like HumanEval prompts (HumanEval itself is never used). Two worker processes, one thread each.
2. A restricted-vocabulary head: the N tokens the target emits most (its continuations, then its top
   alternatives, then prompt text). The draft gives probability 0 elsewhere, which the verification rule handles
   losslessly; at inference the prompt's own tokens are added to the head (RestrictedDrafter).
3. The draft is the target's first layers + final norm, the target's (frozen) input embedding and an untied head
   initialised from the kept rows of the target's tied embedding.
4. Loss: cross-entropy against the target's top-k distribution renormalised over the kept vocabulary (sparse
   KL(target || draft) up to a constant), continuation positions weighted up; AdamW with cosine decay, batches of
   right-padded sequences under bf16 autocast, a fixed number of steps (seeded: a rerun builds the same draft up to thread-level
   floating-point order).
The draft is saved as a full-vocabulary Llama (save_pretrained: Hugging Face assisted generation can use it) plus
`kept_tokens.pt` and `distill.json` (recipe, split, held-out log).

Teacher data and the recipe live in teacher.py; loading the result at inference in reproduce.engine.distilled.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from reproduce.distill.teacher import (
    Recipe,
    TeacherSequence,
    choose_vocabulary,
    collect_teacher_data,
    teacher_data_file,
    training_prompts,
)
from reproduce.engine import (
    models,  # models.load_model looked up at call time (tests replace it)
)
from reproduce.engine.distilled import FORMAT_VERSION, distilled_draft_dir, is_built
from reproduce.engine.runtime import resolve_runtime
from reproduce.errors import ReproduceError


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
