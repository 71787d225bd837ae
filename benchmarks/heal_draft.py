"""Healing a cheaper draft (issue 23's c <= 0.2), a short trial: the 0.5B with some layers left out
(benchmarks.layer_skip) or with every MLP narrowed (benchmarks.mlp_width: FLAP's score, uniform width, the mean
compensation as a down_proj bias that trains too), trained for a few minutes on this CPU by logit distillation (as
Minitron heals pruned models), and its held-out greedy agreement with the target's continuations before and after.

Left out by default: the 8 layers layer_skip found least harmful alone ([4, 6, 8, 9, 11, 12, 13, 23]; c ~0.2, alpha
0.62 untrained); `--width 0.6` narrows the MLPs instead (calibrated on layer_skip's selection rows, never the
held-out ones). Training data: 512-token chunks of the text the restricted vocabulary is counted on
(reproduce.runs.vocabulary.corpus: the standard library's code and XSum's training rows; no evaluation row), in a
seeded order. The decoder layers and the final norm train (AdamW, lr 1e-4, cosine to 0 over the time budget, bf16
autocast); the tied embedding and head stay frozen; the loss is KL(teacher || cut 0.5B) over the 32,768 kept
tokens, the teacher the whole 0.5B (`--teacher draft`) or the 1.5B target itself (`--teacher target`, ~1.5x the
time a token). Prints alpha on benchmarks.layer_skip's held-out rows before and after, the tokens trained on, the
cut draft's c in `--runtime` (the target's too: w4a8 is the practical regime's), and Leviathan's predicted HumanEval
speedup at K beside the whole draft's. Nothing is asserted.

    python -m benchmarks.heal_draft [--minutes 15]                # ~25 min on 2 AVX-512 cores (reports/layer-skip/heal.md)
    python -m benchmarks.heal_draft --width 0.6 --minutes 30      # ~45 min (reports/layer-skip/heal-width.md)
"""

from __future__ import annotations

import argparse
import copy
import math
import random
import time

import torch
import torch.nn.functional as F

from benchmarks.layer_skip import (
    HELD_OUT,
    SELECTION,
    agreement,
    greedy_continuations,
    load_pair,
    step_ms,
    task_prompts,
)
from benchmarks.mlp_width import draft_lm, neuron_stats, pruned_copy, widths
from reproduce.analysis.theory import predicted_speedup
from reproduce.runs.vocabulary import corpus

CHUNK = 512
BATCH = 4
LR = 1e-4


def cut_copy(model, left_out: list[int]):
    """A float32 copy of the Hugging Face model without the decoder layers at `left_out`."""
    cut = copy.deepcopy(model).float()
    cut.model.layers = torch.nn.ModuleList([layer for i, layer in enumerate(cut.model.layers) if i not in left_out])
    for index, layer in enumerate(cut.model.layers):
        layer.self_attn.layer_idx = index  # Hugging Face's cache addresses layers by this
    cut.config.num_hidden_layers = len(cut.model.layers)
    if getattr(cut.config, "layer_types", None):  # per layer (full or sliding attention): the kept layers' own
        cut.config.layer_types = [kind for i, kind in enumerate(cut.config.layer_types) if i not in left_out]
    return cut


def training_chunks(tokenizer, news_documents: int, seed: int = 0) -> list[list[int]]:
    """CHUNK-token pieces of the vocabulary corpus's code and first `news_documents` news rows, shuffled."""
    texts = corpus()
    chunks = []
    for documents in (texts["code"], texts["news"][:news_documents]):
        ids: list[int] = []
        for document in documents:
            ids += tokenizer(document, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        chunks += [ids[i : i + CHUNK] for i in range(0, len(ids) - CHUNK, CHUNK)]
    random.Random(seed).shuffle(chunks)
    return chunks


def narrowed_copy(model, keep: float, calibration: list[list[int]]):
    """A float32 copy of the Hugging Face model with every MLP cut to `keep` of its width (benchmarks.mlp_width,
    uniform), the cut neurons' mean contribution a trainable down_proj bias."""
    stats = neuron_stats(model, calibration)
    scores = stats.scores(model)
    narrowed, biases = pruned_copy(model, stats, scores, widths(scores, keep, "uniform"))
    narrowed = narrowed.float()
    for layer, bias in zip(narrowed.model.layers, biases):
        layer.mlp.down_proj.bias = torch.nn.Parameter(bias.float(), requires_grad=False)
    narrowed.config.intermediate_size = narrowed.model.layers[0].mlp.down_proj.weight.shape[1]
    return narrowed


def runtime_lm(model, vocab: int, kept: torch.Tensor, mode: str):
    """The (cut or narrowed) Hugging Face model as the default profile's restricted draft LM in `mode`; a down_proj
    bias (the narrowed MLPs') is added after the GEMM, as mlp_width's compensation is."""
    if model.model.layers[0].mlp.down_proj.bias is None:  # a cut or whole draft: no compensation
        return draft_lm(model, None, vocab, kept, mode, compensate=False)
    biases = [layer.mlp.down_proj.bias.detach().float() for layer in model.model.layers]
    return draft_lm(model, biases, vocab, kept, mode, compensate=True)


def heal(student, teacher, teacher_head: torch.Tensor, head: torch.Tensor, chunks: list[list[int]], seconds: float) -> int:
    """Train `student`'s layers and final norm for `seconds` towards the distribution of `teacher` (a Hugging Face
    decoder: its final hidden states times `teacher_head`) over the kept tokens (`head`: the student's rows of
    them); returns the tokens trained on."""
    for parameter in student.parameters():
        parameter.requires_grad = False
    trained = [p for layer in student.model.layers for p in layer.parameters()] + list(student.model.norm.parameters())
    for parameter in trained:
        parameter.requires_grad = True
    optimizer = torch.optim.AdamW(trained, lr=LR, weight_decay=0.0)
    started, step = time.time(), 0
    while time.time() - started < seconds and (step + 1) * BATCH <= len(chunks):
        batch = torch.tensor(chunks[step * BATCH : (step + 1) * BATCH])
        with torch.inference_mode():
            target = (teacher(input_ids=batch).last_hidden_state.float() @ teacher_head.T).log_softmax(-1)
        for group in optimizer.param_groups:
            group["lr"] = LR * 0.5 * (1 + math.cos(math.pi * min(1.0, (time.time() - started) / seconds)))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            hidden = student.model(input_ids=batch).last_hidden_state
        log_probs = (hidden.float() @ head.T).log_softmax(-1)
        loss = F.kl_div(log_probs.reshape(-1, head.shape[0]), target.clone().reshape(-1, head.shape[0]),
                        log_target=True, reduction="batchmean")
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        step += 1
        if step % 20 == 0:
            print(f"step {step}: loss {loss.item():.3f}, {step * BATCH * CHUNK / (time.time() - started):.0f} "
                  f"tokens/s", flush=True)
    for parameter in student.parameters():
        parameter.requires_grad = False
    return step * BATCH * CHUNK


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leave-out", default="4,6,8,9,11,12,13,23", help="decoder layers left out")
    parser.add_argument("--width", type=float, help="narrow every MLP to this share of its width instead")
    parser.add_argument("--teacher", choices=("draft", "target"), default="draft", help="the distribution learnt")
    parser.add_argument("--runtime", default="w4a8", help="the target's and the draft's numerics for t(n) and c")
    parser.add_argument("--minutes", type=float, default=15.0, help="training time")
    parser.add_argument("--news", type=int, default=400, help="XSum training documents in the data")
    parser.add_argument("--tokens", type=int, default=64, help="target continuation tokens a held-out prompt")
    parser.add_argument("--k", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    target, draft, kept, target_lm = load_pair(args.runtime)
    vocab = target.vocab_size
    held_out = task_prompts(target.tokenizer, HELD_OUT)
    held_out_tokens = greedy_continuations(target_lm, held_out, args.tokens)
    t1, t_verify = step_ms(target_lm), step_ms(target_lm, args.k + 1)
    if args.width is None:
        left_out = [int(i) for i in args.leave_out.split(",")]
        student, cut = cut_copy(draft.model, left_out), f"left out {left_out}"
        label = f"{len(student.model.layers)} layers"
    else:
        selection = task_prompts(target.tokenizer, SELECTION)
        continuations = greedy_continuations(target_lm, selection, args.tokens)
        student = narrowed_copy(draft.model, args.width, [ids + c for (_, ids), c in zip(selection, continuations)])
        label = f"MLPs at {args.width:g} of their width"
        cut = f"{label} ({student.config.intermediate_size} neurons a layer)"

    def measure(model, label: str) -> None:
        alpha = agreement(runtime_lm(model, vocab, kept, "bf16"), held_out, held_out_tokens)
        # the target timed again beside each draft: the rows are half an hour apart, and this CPU drifts 20-35%
        t1, t_verify = step_ms(target_lm), step_ms(target_lm, args.k + 1)
        c = step_ms(runtime_lm(model, vocab, kept, args.runtime)) / t1
        predicted = predicted_speedup(alpha["humaneval"], args.k, c, {1: t1, args.k + 1: t_verify})
        print(f"| {label} | {alpha['humaneval']:.3f} | {alpha['xsum']:.3f} | {c:.3f} | {predicted:.2f}x |", flush=True)

    print(f"target {args.runtime} t(1) = {t1:.1f} ms, t({args.k + 1})/t(1) = {t_verify / t1:.2f}; {cut}; teacher "
          f"{args.teacher}\n\n"
          f"| draft | held-out alpha HumanEval | held-out alpha XSum | c | predicted HumanEval speedup, K={args.k} |\n"
          "|---|---|---|---|---|", flush=True)
    measure(draft.model, "whole 0.5B")
    measure(student, f"{label}, untrained")
    chunks = training_chunks(draft.tokenizer, args.news)
    head = draft.model.lm_head.weight.detach()[kept].float()
    teacher = (target if args.teacher == "target" else draft).model
    teacher_head = teacher.lm_head.weight.detach()[kept].float()
    tokens = heal(student, teacher.model, teacher_head, head, chunks, args.minutes * 60)
    measure(student, f"{label}, healed on {tokens:,} tokens ({args.minutes:g} min, teacher {args.teacher})")


if __name__ == "__main__":
    main()
