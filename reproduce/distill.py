"""A distilled draft for a Llama target, built on the CPU in minutes (prototype; not wired into the CLI).

Recipe (see notes/draft-experiments.md for what was measured):
1. On-policy data: the target's own greedy continuations of chat prompts from the task's *training* rows
   (never evaluation rows), generated in left-padded batches so the target runs multi-row GEMMs. For each
   continuation position we keep the target's top-k log-probabilities (the teacher) and its greedy token.
2. A restricted-vocabulary head: the N tokens the target is most likely to emit (counted in its continuations,
   then in the training articles). The draft gives probability 0 outside them, which the verification rule
   handles losslessly; the head GEMM shrinks by 49152 / N.
3. The draft is the target's first layers + final norm + the kept rows of its (tied) embedding as head.
4. Loss on continuation positions only (where acceptance is measured): cross-entropy against the target's
   top-k distribution renormalised over the kept vocabulary (sparse KL(target || draft) up to a constant).
The draft is saved with save_pretrained (a valid full-vocabulary Llama, loadable with load_model) plus
`kept_tokens.pt`; `load_draft_lm` rebuilds the fast restricted-head LM the engine's ModelDrafter takes.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from reproduce.errors import ReproduceError
from reproduce.fast_target import FastLlamaLM
from reproduce.models import cache_dir
from reproduce.tasks import build_prompt_ids, get_task, load_examples


@dataclass
class Continuation:
    """One on-policy training sequence: prompt ids, the target's greedy continuation, and its teacher."""

    prompt_ids: list[int]
    continuation: list[int]  # the target's greedy tokens (EOS included when it stopped)
    teacher_ids: torch.Tensor  # [len(continuation), top_k] token ids of the target's top-k at each position
    teacher_logprobs: torch.Tensor  # [len(continuation), top_k]


# ---- 1. on-policy data -------------------------------------------------------------------------------------


def check_train_rows(task: str, rows) -> None:
    """A draft must never see evaluation prompts: only the task's recorded training rows are allowed."""
    outside = sorted(set(rows) - set(get_task(task).train_rows))
    if outside:
        raise ReproduceError(f"rows {outside[:5]}... are not {task} training rows: use rows in {get_task(task).train_rows}")


@torch.inference_mode()
def generate_onpolicy(model, tokenizer, task: str, rows, max_prompt_tokens: int = 400, max_new_tokens: int = 48,
                      batch_size: int = 16, top_k: int = 32) -> list[Continuation]:
    """The target's greedy continuations of the prompts at `rows`, batched with left padding (HF generate;
    measured 9.8 tok/s on 2 contended cores, slower than generate_onpolicy_fast)."""
    check_train_rows(task, rows)
    prompts = [build_prompt_ids(example, tokenizer, max_prompt_tokens) for example in load_examples(task, rows)]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    records = []
    for start in tqdm(range(0, len(prompts), batch_size), desc="on-policy data"):
        batch = prompts[start : start + batch_size]
        width = max(map(len, batch))
        input_ids = torch.tensor([[pad_id] * (width - len(ids)) + ids for ids in batch])
        attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in batch])
        out = model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=pad_id, output_logits=True, return_dict_in_generate=True)
        logits = torch.stack(out.logits, dim=1)  # [batch, steps, V]
        new_tokens = out.sequences[:, width:]
        for row, ids in enumerate(batch):
            tokens = new_tokens[row].tolist()
            if tokenizer.eos_token_id in tokens:
                tokens = tokens[: tokens.index(tokenizer.eos_token_id) + 1]
            top = logits[row, : len(tokens)].float().log_softmax(-1).topk(top_k, dim=-1)
            records.append(Continuation(ids, tokens, top.indices, top.values))
    return records


@torch.inference_mode()
def generate_onpolicy_fast(target_lm, tokenizer, task: str, rows, max_prompt_tokens: int = 400,
                           max_new_tokens: int = 48, top_k: int = 32) -> list[Continuation]:
    """The same data from the engine's own target LM (e.g. FastLlamaLM in bf16), one sequence at a time:
    exactly the numerics acceptance is later measured against, and on this CPU faster than HF's batched generate."""
    check_train_rows(task, rows)
    records = []
    for example in tqdm(load_examples(task, rows), desc="on-policy data"):
        prompt_ids = build_prompt_ids(example, tokenizer, max_prompt_tokens)
        target_lm.reset()
        logits = target_lm.next_logits(prompt_ids)
        tokens, top_ids, top_logprobs = [], [], []
        for _ in range(max_new_tokens):
            top = logits.float().log_softmax(-1).topk(top_k)
            top_ids.append(top.indices)
            top_logprobs.append(top.values)
            tokens.append(int(logits.argmax()))
            if tokens[-1] == tokenizer.eos_token_id:
                break
            logits = target_lm.forward(tokens[-1:])[-1]
        records.append(Continuation(prompt_ids, tokens, torch.stack(top_ids), torch.stack(top_logprobs)))
    return records


def choose_vocabulary(records: list[Continuation], size: int, always: list[int], vocab_size: int) -> torch.Tensor:
    """Sorted ids of the `size` tokens the target most often emits (continuations first, then its top-k
    alternatives, then the prompts' tokens), plus `always` (special tokens)."""
    counts = torch.zeros(vocab_size, dtype=torch.float64)
    for r in records:  # weights make each source a tie-break for the next
        for ids, weight in ((torch.tensor(r.continuation), 1e6), (r.teacher_ids[:, :8].flatten(), 1e3),
                            (torch.tensor(r.prompt_ids), 1.0)):
            counts.index_add_(0, ids, torch.full((len(ids),), weight, dtype=torch.float64))
    counts[torch.tensor(always)] = float("inf")
    return counts.topk(size).indices.sort().values


# ---- 2./3. the draft ---------------------------------------------------------------------------------------


def build_draft(target_model, layers: tuple[int, ...] = (0, 1)):
    """A Llama with the target's embedding, the given decoder layers and the final norm (head tied)."""
    from transformers import LlamaForCausalLM

    config = copy.deepcopy(target_model.config)
    config.num_hidden_layers = len(layers)
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in layers]
    draft = LlamaForCausalLM(config)
    draft.model.embed_tokens.load_state_dict(target_model.model.embed_tokens.state_dict())
    draft.model.norm.load_state_dict(target_model.model.norm.state_dict())
    for index, source in enumerate(layers):
        draft.model.layers[index].load_state_dict(target_model.model.layers[source].state_dict())
    # untied head: training updates only the kept rows (a dense 49152-row embedding gradient would dominate a step)
    draft.config.tie_word_embeddings = False
    draft.lm_head.weight = torch.nn.Parameter(target_model.lm_head.weight.detach().clone())
    draft.model.embed_tokens.weight.requires_grad_(False)
    return draft.float()


def restricted_logits(draft, input_ids: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
    """Draft logits over the kept tokens only: [batch, len, len(kept)]; `head` holds the kept rows."""
    hidden = draft.model(input_ids=input_ids).last_hidden_state
    return F.linear(hidden, head)


# ---- 4. training -------------------------------------------------------------------------------------------


def sequence_targets(record: Continuation, kept_index: torch.Tensor):
    """(input ids, positions predicting the continuation, teacher probs over the kept vocabulary, greedy
    labels in kept indices (-1: outside))."""
    ids = record.prompt_ids + record.continuation[:-1]
    positions = torch.arange(len(record.prompt_ids) - 1, len(ids))
    teacher = torch.zeros(len(record.continuation), int(kept_index.max()) + 1)  # [n, len(kept)]
    index = kept_index[record.teacher_ids]  # [n, top_k], -1 outside
    probs = record.teacher_logprobs.exp() * (index >= 0)
    teacher.scatter_add_(1, index.clamp(min=0), probs)
    teacher = teacher / teacher.sum(-1, keepdim=True).clamp(min=1e-9)
    labels = kept_index[torch.tensor(record.continuation)]
    return torch.tensor(ids), positions, teacher, labels


@torch.no_grad()
def evaluate(draft, records: list[Continuation], head: torch.Tensor, kept_index: torch.Tensor) -> dict:
    """Held-out sparse KL(target || draft) over the kept vocabulary and top-1 agreement with the target."""
    kl_sum, agree, total = 0.0, 0, 0
    for record in records:
        ids, positions, teacher, labels = sequence_targets(record, kept_index)
        logprobs = restricted_logits(draft, ids[None], head)[0, positions].log_softmax(-1)
        kl = (teacher * (teacher.clamp(min=1e-9).log() - logprobs)).sum(-1)
        kl_sum += kl.sum().item()
        agree += (logprobs.argmax(-1) == labels).sum().item()
        total += len(labels)
    return {"kl": kl_sum / total, "top1": agree / total}


def train(draft, train_records, heldout_records, kept: torch.Tensor, vocab_size: int, minutes: float,
          lr: float = 3e-4, seed: int = 0, eval_every: int = 100) -> list[dict]:
    """AdamW on the sparse-KL loss, one sequence per step, for `minutes` of wall time. Returns the log."""
    torch.manual_seed(seed)
    kept_index = torch.full((vocab_size,), -1, dtype=torch.long)
    kept_index[kept] = torch.arange(len(kept))
    head = torch.nn.Parameter(draft.lm_head.weight.detach()[kept].clone())  # the kept rows, trained on their own
    trainable = [p for name, p in draft.model.named_parameters() if p.requires_grad] + [head]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
    log = [{"step": 0, "minutes": 0.0, **evaluate(draft.eval(), heldout_records, head, kept_index)}]
    print(log[-1])
    start, step = time.perf_counter(), 0
    order = torch.randperm(len(train_records))
    bar = tqdm(desc="train")
    while (time.perf_counter() - start) / 60 < minutes:
        record = train_records[order[step % len(order)]]
        draft.train()
        ids, positions, teacher, _ = sequence_targets(record, kept_index)
        logprobs = restricted_logits(draft, ids[None], head)[0, positions].log_softmax(-1)
        loss = -(teacher * logprobs).sum(-1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        bar.update()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if step % eval_every == 0:
            log.append({"step": step, "minutes": (time.perf_counter() - start) / 60,
                        **evaluate(draft.eval(), heldout_records, head, kept_index)})
            print(log[-1])
    bar.close()
    log.append({"step": step, "minutes": (time.perf_counter() - start) / 60,
                **evaluate(draft.eval(), heldout_records, head, kept_index)})
    print(log[-1])
    with torch.no_grad():
        draft.lm_head.weight[kept] = head  # saved as a full-vocabulary Llama; only kept rows were trained
    return log


# ---- saving and loading ------------------------------------------------------------------------------------


def save_draft(draft, tokenizer, kept: torch.Tensor, name: str) -> Path:
    path = cache_dir() / "drafts" / name
    draft.save_pretrained(path)
    tokenizer.save_pretrained(path)
    torch.save(kept, path / "kept_tokens.pt")
    return path


class RestrictedFastLM(FastLlamaLM):
    """FastLlamaLM whose head holds only the kept tokens' rows; logits elsewhere are -inf (probability 0)."""

    def forward(self, token_ids: list[int], last_only: bool = False) -> torch.Tensor:
        kept_logits = super().forward(token_ids, last_only)
        logits = torch.full((kept_logits.shape[0], self.full_vocab_size), float("-inf"))
        logits[:, self.kept] = kept_logits
        return logits


def restricted_fast_lm(model, kept: torch.Tensor, vocab_size: int, linear_mode: str = "bf16") -> RestrictedFastLM:
    lm = RestrictedFastLM.from_hf(model, vocab_size, linear_mode=linear_mode)
    head = model.lm_head.weight.detach()[kept].float()
    if linear_mode != "fp32":
        head = head.to(torch.bfloat16).float()  # the same rounding FastLlamaLM applies to its own head
    lm.head_bf16 = head.to(torch.bfloat16).contiguous() if linear_mode != "fp32" else None
    lm.head_fp32 = head.contiguous() if linear_mode != "bf16" else None
    lm.kept, lm.full_vocab_size = kept, vocab_size
    return lm


def load_draft_lm(path, vocab_size: int, linear_mode: str = "bf16") -> RestrictedFastLM:
    from reproduce.models import load_model

    loaded = load_model(str(path))
    return restricted_fast_lm(loaded.model, torch.load(Path(path) / "kept_tokens.pt"), vocab_size, linear_mode)
