"""Command line: `python -m reproduce generate` runs ArS and SpS on one prompt and compares them.

Bad input is reported as one line `error: <message>` on stderr with exit code 2, never a traceback. Everything
that can be checked without a model is checked before any model loads. torch and transformers are imported only
by the commands that run models (generate, run, distill): `analyse` and `report` never load them.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from reproduce.catalogue import DEFAULT_METHODS, HYBRID_PREFIX, METHOD_KINDS, RUNTIMES
from reproduce.errors import ReproduceError
from reproduce.runs.results import SUMMARY_FILE, TIDY_FILE
from reproduce.tasks import TASKS

DEFAULT_TARGET = "smollm2-135m-instruct"


class _Parser(argparse.ArgumentParser):
    """argparse that raises ReproduceError instead of printing usage and exiting, so errors stay one line."""

    def error(self, message):
        raise ReproduceError(f"{message} (see `python -m {self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="reproduce", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gen = commands.add_parser(
        "generate",
        help="decode one prompt with autoregressive (ArS) and speculative (SpS) sampling and compare them",
        description="Decode one prompt with ArS and SpS; print the SpS text, acceptance and speedup.",
    )
    gen.add_argument("--target", default=DEFAULT_TARGET,
                     help=f"target model: offline alias, tiny-random-<arch>, .gguf file, directory or hub id "
                          f"(default {DEFAULT_TARGET})")
    gen.add_argument("--draft", default="ngram",
                     help="draft: a model name as for --target, 'ngram' (prompt lookup), or 'target' "
                          "(the target drafts for itself: acceptance 1.0 by construction) (default ngram)")
    gen.add_argument("--k", type=int, default=4, help="tokens drafted per target call (default 4)")
    gen.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default 0.8)")
    gen.add_argument("--top-p", type=float, default=0.9, help="nucleus mass in (0, 1], 1 = off (default 0.9)")
    gen.add_argument("--top-k", type=int, default=0, help="0 = off (default 0)")
    gen.add_argument("--max-new-tokens", type=int, default=64, help="(default 64)")
    prompt = gen.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", help="prompt text (needs a model with a tokenizer)")
    prompt.add_argument("--prompt-ids", help="prompt as token ids, e.g. '1 2 3' (for models without a tokenizer)")
    gen.add_argument("--chat", action=argparse.BooleanOptionalAction, default=None,
                     help="wrap --prompt in the tokenizer's chat template (default: on when it has one)")
    gen.add_argument("--seed", type=int, default=0, help="seed of the ArS and SpS random generators (default 0)")
    gen.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    gen.add_argument("--ngram-size", type=int, default=3, help="longest n-gram the ngram draft matches (default 3)")
    gen.add_argument("--runtime", default="auto", choices=RUNTIMES,
                     help="how models run: hf (transformers forward), fast-fp32 / fast-bf16 / fast-int8 / fast-int4 / "
                          "fast-w4a8 (int4 weights, int8 activations; compiled on first use) "
                          "(reproduce.engine.fast_lm, Llama and Qwen2 only; all but fp32 change the weights' numerics, "
                          "so each is a slightly different target), llama.cpp (the model's GGUF in llama.cpp, its "
                          "numerics the GGUF's own; offline aliases and .gguf files; needs llama-cpp-python from "
                          "make install), auto (a probe per CPU picks the fastest fast mode "
                          "that is batch-invariant and flat at K for the target, the fastest for a draft; hf for "
                          "other models) (default auto)")
    gen.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    gen.set_defaults(run=generate)

    run = commands.add_parser(
        "run", help="run (or resume) an experiment config and analyse its rows",
        description="Run an experiment from experiments/<profile>.yaml, a YAML file, or flags naming your own "
                    "target, drafts and tasks (on experiments/own-pair.yaml); rerunning resumes where it stopped. "
                    "The resolved config is written to OUT/config.yaml: `run --config OUT/config.yaml --out OUT` "
                    "repeats (resumes) the run.",
    )
    which = run.add_mutually_exclusive_group()
    which.add_argument("--profile", help="experiments/<profile>.yaml (default: own-pair when --target, --draft or "
                                         "--tasks is given, else default)")
    which.add_argument("--config", help="path of an experiment YAML file, e.g. results/mine/config.yaml")
    run.add_argument("--target", help="target model (replaces the config's): offline alias, tiny-random-<arch>, "
                                      ".gguf file, local directory or hub id")
    run.add_argument("--draft", action="append", metavar="NAME[,NAME]",
                     help="draft(s) (replace the config's; repeatable or comma-separated): ngram, target, distilled, "
                          f"{HYBRID_PREFIX}<draft>, or a model name as for --target")
    run.add_argument("--tasks", metavar="TASK[:N],...",
                     help="tasks to run, each on its first N evaluation rows, e.g. humaneval:20,xsum:30 "
                          f"({', '.join(TASKS)})")
    run.add_argument("--k", metavar="K[,K]", help="tokens drafted per target call, for every draft, e.g. 2,4")
    run.add_argument("--modes", metavar="MODE[,MODE]",
                     help="sampling modes for every task, e.g. greedy,code_nucleus (defined under `modes:`; "
                          "default: each task's own, e.g. greedy and the paper's nucleus setting)")
    run.add_argument("--methods", metavar="METHOD[,METHOD]",
                     help=f"e.g. ars,sps (default: {', '.join(DEFAULT_METHODS)}; all: {', '.join(METHOD_KINDS)})")
    run.add_argument("--name", help="experiment name (default: the --out directory's name for the flag form)")
    run.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY.PATH=VALUE",
                     help="override any config setting (a YAML value), e.g. --set threads=4 "
                          "--set tasks.xsum.rows=[0,5] --set target.dtype=bfloat16; repeatable")
    run.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    run.add_argument("--out", help="results directory (default: results/<experiment name>)")
    run.set_defaults(run=run_command)

    analyse = commands.add_parser("analyse", help=f"write {SUMMARY_FILE} and {TIDY_FILE} from a results directory's rows "
                                                  "(what `report` reads)")
    analyse.add_argument("out", help="results directory, e.g. results/default")
    analyse.set_defaults(run=analyse_command)

    dist = commands.add_parser(
        "distill", help="build the distilled draft for a Llama target (cached outside the repository)",
        description="Distil a small draft from the target (teacher data from training rows only; see "
                    "reproduce/distill/). Does nothing when the draft is already built, unless --force.",
    )
    dist.add_argument("--target", default=DEFAULT_TARGET, help=f"Llama target (default {DEFAULT_TARGET})")
    dist.add_argument("--out", help="output directory (default: $REPRODUCE_CACHE/drafts/<target>-distilled)")
    dist.add_argument("--force", action="store_true", help="rebuild even when a draft is already there")
    from reproduce.distill.recipe import Recipe

    for name, default in vars(Recipe()).items():
        if name in ("target",) or isinstance(default, tuple):
            continue
        flag, help_text = f"--{name.replace('_', '-')}", f"recipe setting (default {default})"
        if isinstance(default, bool):
            dist.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        else:
            dist.add_argument(flag, type=type(default), default=default, help=help_text)
    dist.set_defaults(run=distill_command)

    from reproduce.report import render as report

    render = commands.add_parser("report", help="render the paper-style report (markdown + figures) from a results directory")
    report.add_arguments(render)
    render.set_defaults(run=report.report_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.run(args)
    except ReproduceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0


def distill_command(args) -> int:
    from dataclasses import fields

    from reproduce.distill.recipe import Recipe
    from reproduce.distill.train import distill

    recipe = Recipe(**{f.name: getattr(args, f.name) for f in fields(Recipe) if hasattr(args, f.name)})
    for name in ("xsum_rows", "pubmedqa_rows", "code_prompts", "steps", "batch_size", "workers", "vocab_size",
                 "max_new_tokens", "teacher_top_k", "eval_every"):
        if getattr(recipe, name) < (0 if name.endswith(("rows", "prompts")) else 1):
            raise ReproduceError(f"--{name.replace('_', '-')} must be positive, got {getattr(recipe, name)}")
    distill(recipe, args.out, args.force)
    return 0


# ---- generate ------------------------------------------------------------------------------------------------


def _validate(args):
    """Checks that need no model. Returns the SamplingParams (which validate temperature, top-p, top-k)."""
    from reproduce.engine.sampling import SamplingParams

    if args.k < 1:
        raise ReproduceError(f"--k (tokens drafted per target call) must be >= 1, got {args.k}")
    if args.max_new_tokens < 1:
        raise ReproduceError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if args.threads < 1:
        raise ReproduceError(f"--threads must be >= 1, got {args.threads}")
    if args.ngram_size < 1:
        raise ReproduceError(f"--ngram-size must be >= 1, got {args.ngram_size}")
    if args.prompt is not None and not args.prompt.strip():
        raise ReproduceError("the prompt is empty: give a non-empty --prompt")
    if args.prompt_ids is not None and not _parse_ids(args.prompt_ids):
        raise ReproduceError("the prompt is empty: give at least one token id in --prompt-ids, e.g. '1 2 3'")
    return SamplingParams(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)


def _parse_ids(text: str) -> list[int]:
    try:
        return [int(tok) for tok in text.replace(",", " ").split()]
    except ValueError:
        raise ReproduceError(f"--prompt-ids must be integers separated by spaces, e.g. '1 2 3', got {text!r}") from None


def _prompt_ids(args, target) -> list[int]:
    if args.prompt_ids is not None:
        return _parse_ids(args.prompt_ids)
    tokenizer = target.tokenizer
    if tokenizer is None:
        raise ReproduceError(f"model {target.name!r} has no tokenizer: give the prompt as token ids with --prompt-ids")
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if args.chat and not has_template:
        raise ReproduceError(f"model {target.name!r} has no chat template: drop --chat")
    use_chat = has_template if args.chat is None else args.chat
    if use_chat:
        messages = [{"role": "user", "content": args.prompt}]
        return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False))
    return tokenizer(args.prompt).input_ids


def _load(args):
    """(target LoadedModel, prompt ids, its resolved runtime, its cached LM, drafter): the prompt is checked before
    anything is built; the target is built once, at --k (auto picks its mode for K+1-token verification), and the
    `target` draft drafts over its weights."""
    from reproduce.engine.drafters import build_drafter
    import torch

    from reproduce.catalogue import parse_draft
    from reproduce.engine.models import load_model, shared_vocab_size
    from reproduce.engine.runtime import build_target

    target = load_model(args.target)
    prompt_ids = _prompt_ids(args, target)
    if prompt_ids and (max(prompt_ids) >= target.vocab_size or min(prompt_ids) < 0):  # before auto probes and prints
        raise ReproduceError(f"prompt token ids must lie in [0, {target.vocab_size}): was it tokenized for another "
                             "model?")
    loaded = {}  # a model draft is loaded (and its vocabulary checked) before auto probes and prints anything

    def load_draft(name, dtype=torch.float32):
        if name not in loaded:
            model = load_model(name, dtype)
            shared_vocab_size(target, model)
            loaded[name] = model
        return loaded[name]

    inner = parse_draft(args.draft)
    inner = inner.inner if inner.kind == "hybrid" else inner
    if inner.kind == "model":
        load_draft(inner.name)
    runtime, target_lm = build_target(target, args.runtime, args.k)
    draft = build_drafter(args.draft, target, runtime, args.runtime, args.ngram_size, target_lm=target_lm,
                          load_model=load_draft)
    return target, prompt_ids, runtime, target_lm, draft.drafter


def generate(args) -> int:
    import torch
    from transformers.utils import logging as hf_logging

    from reproduce.engine.decoding import autoregressive_decode, speculative_decode

    params = _validate(args)
    hf_logging.disable_progress_bar()  # "Loading weights" bars would clutter the comparison
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        target, prompt_ids, runtime, target_lm, drafter = _load(args)
        eos = target.eos_token_id

        def run_ars(max_new_tokens):
            generator = torch.Generator().manual_seed(args.seed)
            return autoregressive_decode(target_lm, prompt_ids, max_new_tokens, params, generator, eos)

        def run_sps(max_new_tokens):
            generator = torch.Generator().manual_seed(args.seed)
            return speculative_decode(target_lm, drafter, prompt_ids, args.k, max_new_tokens, params, generator, eos)

        # Warm-up: the first forward of a model pays one-off costs (allocation, lazy init) neither method should.
        run_ars(2)
        run_sps(2)
        ars = run_ars(args.max_new_tokens)
        sps = run_sps(args.max_new_tokens)
    finally:
        torch.set_num_threads(previous_threads)

    text = None
    if target.tokenizer is not None:
        text = target.tokenizer.decode(sps.tokens, skip_special_tokens=True)
    # the decode loop's ms/token (the paper's "mean sampling time per token"); end to end adds each method's prefills
    speedup = ars.decode_ms_per_token / sps.decode_ms_per_token
    speedup_e2e = ars.ms_per_token / sps.ms_per_token
    if args.json:
        record = {
            "prompt": args.prompt,
            "prompt_ids": prompt_ids,
            "sps_tokens": sps.tokens,
            "ars_tokens": ars.tokens,
            "text": text,
            "accepted_per_step": [step.num_accepted for step in sps.steps],
            "proposed_per_step": [len(step.proposed) for step in sps.steps],
            "acceptance_rate": _finite_or_none(sps.acceptance_rate),
            "alpha": _finite_or_none(sps.alpha),
            "tokens_per_target_call": sps.tokens_per_target_call,
            "sps_ms_per_token": sps.decode_ms_per_token,
            "ars_ms_per_token": ars.decode_ms_per_token,
            "speedup": speedup,
            "sps_prefill_ms": sps.prefill_ms + sps.draft_prefill_ms,
            "ars_prefill_ms": ars.prefill_ms,
            "speedup_end_to_end": speedup_e2e,
            "settings": {
                "target": args.target, "draft": args.draft, "k": args.k, "temperature": args.temperature,
                "top_p": args.top_p, "top_k": args.top_k, "seed": args.seed, "max_new_tokens": args.max_new_tokens,
                "runtime": runtime,
            },
        }
        print(json.dumps(record))
        return 0

    print(text if text is not None else "tokens: " + " ".join(map(str, sps.tokens)))
    print()
    shaping = "greedy" if params.greedy else f"temperature {args.temperature}, top-p {args.top_p}, top-k {args.top_k}"
    print(f"target {args.target} ({runtime}), draft {args.draft}, K={args.k}, {shaping}, seed {args.seed}")
    print(f"SpS: {len(sps.tokens)} tokens in {sps.target_calls} target calls "
          f"({sps.tokens_per_target_call:.2f} tokens per call), {sps.decode_ms_per_token:.1f} ms/token")
    print(f"     acceptance {sps.acceptance_rate:.3f} ({sps.accepted}/{sps.proposed} drafted tokens), "
          f"expected acceptance alpha {sps.alpha:.3f}")
    print(f"ArS: {len(ars.tokens)} tokens in {ars.target_calls} target calls, {ars.decode_ms_per_token:.1f} ms/token")
    print(f"speedup: {speedup:.2f}x (ArS ms/token / SpS ms/token, decode loop); end to end with prefills "
          f"{speedup_e2e:.2f}x (prefill: ArS {ars.prefill_ms:.0f} ms, SpS {sps.prefill_ms + sps.draft_prefill_ms:.0f} ms)")
    if params.greedy:
        # At temperature 0 the rule is exact and deterministic: SpS must emit ArS's tokens.
        print(f"SpS tokens identical to ArS: {'yes' if sps.tokens == ars.tokens else 'NO'}")
    return 0


def _finite_or_none(value: float) -> float | None:
    """JSON has no NaN: acceptance is undefined when the draft proposed nothing (an n-gram draft with no match)."""
    return value if math.isfinite(value) else None


# ---- run / analyse -------------------------------------------------------------------------------------------


def run_command(args) -> int:
    from pathlib import Path

    from reproduce.runs.config import dump_config
    from reproduce.runs.overrides import build_config

    config = build_config(profile=args.profile, config=args.config, target=args.target, drafts=args.draft,
                          tasks=args.tasks, k=args.k, modes=args.modes, methods=args.methods, name=args.name,
                          sets=args.sets, out=args.out)
    if args.print_config:
        print(dump_config(config), end="")
        return 0
    from reproduce.analysis.summary import analyse
    from reproduce.runs.runner import run_experiment

    out_dir = Path(args.out or Path("results") / config.name)
    run_experiment(config, out_dir)
    analyse(out_dir)
    print(f"rows, {SUMMARY_FILE} and {TIDY_FILE} in {out_dir}; report: python -m reproduce report {out_dir}")
    return 0


def analyse_command(args) -> int:
    from reproduce.analysis.summary import analyse

    summary = analyse(args.out)
    print(f"{summary['rows']} rows analysed -> {args.out}/{SUMMARY_FILE}")
    return 0

