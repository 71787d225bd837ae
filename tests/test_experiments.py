"""Experiment configs, the resumable runner and the analysis.

Method: every YAML under experiments/ is loaded and validated; the hub configs are checked by standing a tiny
random model of each named architecture in for every model (no download) and decoding with it, including
the `device_map: auto` path through accelerate. Bad configs must give one-line errors. The runner is run for
real on the offline target with a micro config, killed with SIGKILL mid-run, resumed, and compared row for
row with an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
import torch

from reproduce.engine.decoding import autoregressive_decode, speculative_decode
from reproduce.engine.drafters import ModelDrafter
from reproduce.engine.lm import CachedLM
from reproduce.engine.models import load_model, tiny_random_model
from reproduce.engine.sampling import SamplingParams
from reproduce.errors import ReproduceError
from reproduce.runs.config import EXPERIMENTS_DIR, load_config, read_config_data, resolve_config
from reproduce.runs.plan import main_methods, plan_units, row_seed
from reproduce.runs.results import ROWS_FILE, json_safe, read_done_keys, read_rows, row_key
from reproduce.runs.runner import _same_config

ALL_CONFIGS = sorted(EXPERIMENTS_DIR.rglob("*.yaml"))
HUB_CONFIGS = sorted((EXPERIMENTS_DIR / "hub").glob("*.yaml"))
REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: str(p.relative_to(EXPERIMENTS_DIR)))
def test_every_config_loads(path):
    config = load_config(path)
    assert config.target.name
    if path.stem != "base":
        assert config.tasks, "an experiment must run at least one task"
        for task in config.tasks.values():
            assert set(task.modes) <= set(config.modes)


@pytest.mark.parametrize("path", HUB_CONFIGS, ids=lambda p: p.stem)
def test_hub_configs_run_with_tiny_models_of_the_same_architecture(path, tmp_path, smollm2):
    """Each hub model is replaced by a tiny random model of its architecture; a target with device_map
    'auto' is saved (with a real tokenizer, SmolLM2's) and reloaded by `load_model` through accelerate, as a
    user's oversized target would be."""
    config = load_config(path)
    assert config.data_source == "hub"
    specs = [config.target] + [d for d in config.drafts if d.kind.is_model]
    assert all(spec.architecture for spec in specs), "hub configs name each model's architecture"
    vocab = 24
    target = tiny_random_model(config.target.architecture, vocab_size=vocab, seed=1)
    if config.target.device_map:
        saved = tiny_random_model(config.target.architecture, vocab_size=smollm2.vocab_size, seed=1)
        saved.model.save_pretrained(tmp_path / "target")
        smollm2.tokenizer.save_pretrained(tmp_path / "target")
        loaded = load_model(str(tmp_path / "target"), device_map=config.target.device_map)
        # with one CPU and no accelerator accelerate places everything on the CPU (no hf_device_map is set)
        assert loaded.model.device.type == "cpu" and loaded.vocab_size == smollm2.vocab_size
        trace = autoregressive_decode(CachedLM(loaded.model, loaded.vocab_size), [1, 2, 3], 3,
                                      SamplingParams(temperature=0), torch.Generator().manual_seed(0))
        assert len(trace.tokens) == 3
    params = SamplingParams(temperature=1.0, top_p=0.9)
    ars = autoregressive_decode(CachedLM(target.model), [1, 2, 3], 6, params, torch.Generator().manual_seed(0))
    assert len(ars.tokens) == 6
    for spec in specs[1:]:
        draft = tiny_random_model(spec.architecture, vocab_size=vocab, seed=2)
        for k in config.k_values:
            trace = speculative_decode(CachedLM(target.model), ModelDrafter(draft.model, vocab), [1, 2, 3], k, 6,
                                       params, torch.Generator().manual_seed(0))
            assert len(trace.tokens) == 6 and trace.proposed > 0


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(f"include: {EXPERIMENTS_DIR / 'base.yaml'}\n{text}")
    return path


SWEEPABLE_SETUP = "tasks: {xsum: {rows: [0, 2], modes: [greedy]}}\ndrafts: [{name: ngram}]\n"  # what a sweep names


@pytest.mark.parametrize("text, message", [
    ("k_valuse: [2]\n", "did you mean 'k_values'"),
    ("tasks: {xsum: {rows: [0, 2], modes: [greedy], max_new_token: 8}}\n", "did you mean 'max_new_tokens'"),
    ("tasks: {xsumm: {rows: [0, 2], modes: [greedy]}}\n", "unknown task 'xsumm'"),
    ("tasks: {xsum: {rows: [0, 2], modes: [beam]}}\n", "mode 'beam'"),
    ("tasks: {xsum: {rows: [300, 302], modes: [greedy]}}\n", "reserved for training"),
    ("k_values: [0]\ntasks: {}\n", "k_values must be integers >= 1"),
    ("modes: {hot: {temperature: -1}}\n", "temperature >= 0"),
    ("methods: [ars, sps, hf_asisted]\n", "did you mean 'hf_assisted'"),
    ("drafts: [{name: ngram, ngram: 3}]\n", "did you mean 'ngram_size'"),
    ("sweeps: {s: {task: xsum, mode: greedy, draft: ngram, vary: batch, values: [1]}}\n", "vary must be one of"),
    ("target: [1, 2]\n", "expected a mapping"),
    ("peer_k_values: [0]\n", "peer_k_values must be integers >= 1"),
    ("peer_k_values: [5]\n", "peer_k_values [5] are not among the drafts' K values [4]"),
    ("methods: [ars, sps_fh]\n", "did you mean 'sps_hf'"),
    ("method_scopes: {llamacpp_ngram: {modes: [greedy]}}\n", "method_scopes.llamacpp_ngram: ['llamacpp_ngram'] are not"),
    ("method_scopes: {hf_assisted: {tasks: [xsum]}}\n", "method_scopes.hf_assisted: ['xsum'] are not among"),
    ("method_scopes: {ars: {modes: [beam]}}\n", "method_scopes.ars: ['beam'] are not among"),
    ("method_scopes: {ars: {task: [xsum]}}\n", "did you mean 'tasks'"),
    ("drafts: [{name: ngram, stop_below: 0.5}]\n", "stop_below must be a probability in (0, 1) on a draft with a model"),
    ("drafts: [{name: t, model: target, stop_below: 1.5}]\n", "stop_below must be a probability in (0, 1)"),
    ("drafts: [{name: t, model: target, stop_below: high}]\n", "stop_below must be a probability in (0, 1)"),
    (SWEEPABLE_SETUP + "sweeps: {s: {task: xsum, mode: greedy, draft: ngram, vary: k, values: [auto]}}\n",
     "values [auto] (K chosen by the probe) stands alone, in a block with vary: k and target_runtime auto"),
    (SWEEPABLE_SETUP + "sweeps: {s: {task: xsum, mode: greedy, draft: ngram, vary: k, values: [auto, 3], "
     "target_runtime: auto}}\n",
     "values [auto] (K chosen by the probe) stands alone"),
    (SWEEPABLE_SETUP + "sweeps: {s: {task: xsum, mode: greedy, draft: ngram, vary: temperature, values: [auto], "
     "target_runtime: auto}}\n",
     "values [auto] (K chosen by the probe) stands alone"),
    (SWEEPABLE_SETUP + "sweeps: {s: {task: xsum, mode: greedy, draft: ngram, vary: k, values: [2], acceptance: 1.5}}\n",
     "sweeps.s.acceptance must be a probability in (0, 1)"),
])
def test_bad_config_gives_one_line_error(tmp_path, text, message):
    with pytest.raises(ReproduceError) as error:
        load_config(_write(tmp_path, text))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_unknown_profile_and_include_cycle(tmp_path):
    with pytest.raises(ReproduceError, match="choose one of"):
        load_config("no-such-profile")
    (tmp_path / "a.yaml").write_text("include: b.yaml\n")
    (tmp_path / "b.yaml").write_text("include: a.yaml\n")
    with pytest.raises(ReproduceError, match="include cycle"):
        load_config(tmp_path / "a.yaml")


def test_include_merges_mappings_and_replaces_lists():
    quick = load_config("quick")
    defaults = load_config(EXPERIMENTS_DIR / "base.yaml")
    assert quick.modes == defaults.modes  # inherited untouched
    assert [d.name for d in quick.drafts] != [d.name for d in defaults.drafts]  # lists replace
    assert quick.target == defaults.target


MICRO = """\
include: {defaults}
name: micro
target: {{name: smollm2-135m-instruct}}
drafts: [{{name: ngram}}]
methods: [ars, sps]
tasks:
  xsum: {{rows: [0, 3], modes: [greedy, xsum_nucleus], max_new_tokens: 6, max_prompt_tokens: 120}}
k_values: [2]
warmup_tokens: 2
"""

DETERMINISTIC = ("block", "task", "example_id", "mode", "seed", "sample", "method", "draft", "k", "seed_used",
                 "generated_ids", "accepted", "proposed", "target_calls", "text")


def _run(config_path: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "reproduce", "run", "--config", str(config_path), "--out", str(out)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_rows(tmp_path, smollm2):
    config_path = tmp_path / "micro.yaml"
    config_path.write_text(MICRO.format(defaults=EXPERIMENTS_DIR / "base.yaml"))
    units = plan_units(load_config(config_path))
    total = sum(len(u.methods) for u in units)
    assert total == 12

    full = tmp_path / "full"
    assert _run(config_path, full).wait(timeout=300) == 0

    resumed = tmp_path / "resumed"
    process = _run(config_path, resumed)
    deadline = time.time() + 300
    while time.time() < deadline:
        rows_file = resumed / ROWS_FILE
        if rows_file.exists() and len(rows_file.read_text().splitlines()) >= 4:
            break
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    killed_with = len(read_done_keys(resumed / ROWS_FILE))
    assert 4 <= killed_with < total, "the kill must land mid-run"
    with open(resumed / ROWS_FILE, "a") as f:
        f.write('{"block": "main", "task": "xs')  # a torn line, as a kill mid-write would leave
    assert _run(config_path, resumed).wait(timeout=300) == 0

    def deterministic(rows):
        return sorted(json.dumps({k: r[k] for k in DETERMINISTIC}, sort_keys=True) for r in rows)

    assert len(read_rows(resumed)) == total
    assert deterministic(read_rows(resumed)) == deterministic(read_rows(full))
    manifest = json.loads((resumed / "manifest.json").read_text())
    assert len(manifest["sessions"]) == 2 and manifest["sessions"][-1]["end"]
    # greedy SpS reproduces ArS token for token in the runner too
    rows = read_rows(full)
    greedy = {(r["example_id"], r["method"]): r["generated_ids"] for r in rows if r["mode"] == "greedy"}
    for (example_id, method), ids in greedy.items():
        assert ids == greedy[(example_id, "ars")]
    # each row records the seed it drew from: its own, recomputable from the row
    assert all(r["seed_used"] == zlib.crc32(row_key(r).encode()) for r in rows)
    assert len({r["seed_used"] for r in rows}) == total


def test_every_row_draws_from_its_own_seed(tmp_path):
    """ArS and SpS of one prompt must be independent draws (the analysis's two-sample tests assume it): each
    (unit, method) gets its own seed, the crc32 of its row key, the same on every run and machine."""
    config_path = tmp_path / "micro.yaml"
    config_path.write_text(MICRO.format(defaults=EXPERIMENTS_DIR / "base.yaml"))
    units = plan_units(load_config(config_path))
    seeds = [row_seed(unit, method) for unit in units for method in unit.methods]
    assert len(set(seeds)) == len(seeds) == 12
    first = units[0]
    assert [m.kind for m in first.methods] == ["ars", "sps"] and first.example.example_id == "38295789"
    assert [row_seed(first, m) for m in first.methods] == [467434439, 202924142]


def test_a_results_directory_refuses_another_config(tmp_path, smollm2):
    from reproduce.runs.runner import run_experiment

    config_path = tmp_path / "micro.yaml"
    config_path.write_text(MICRO.format(defaults=EXPERIMENTS_DIR / "base.yaml").replace("[0, 3]", "[0, 1]"))
    config = load_config(config_path)
    out = tmp_path / "out"
    run_experiment(config, out, progress=False)
    other = load_config(str(config_path).replace("micro", "micro"))
    object.__setattr__(other, "k_values", (3,))
    with pytest.raises(ReproduceError, match="different config"):
        run_experiment(other, out, progress=False)


PEERS = """\
include: {defaults}
name: peers
drafts: [{{name: ngram, k_values: [1, 2, 3]}}, {{name: target, k_values: [1, 2]}}, {{name: ngram+distilled, k_values: [2]}}]
methods: {methods}
peer_k_values: {peer_k_values}
tasks: {{xsum: {{rows: [0, 1], modes: [greedy]}}}}
"""


def _methods(tmp_path, methods: str, peer_k_values: str) -> list[tuple]:
    path = tmp_path / "peers.yaml"
    path.write_text(PEERS.format(defaults=EXPERIMENTS_DIR / "base.yaml", methods=methods, peer_k_values=peer_k_values))
    return [(m.kind, m.draft, m.k) for m in main_methods(load_config(path))]


def test_hf_peers_run_at_peer_k_values_and_only_for_drafts_hf_can_run(tmp_path):
    methods = _methods(tmp_path, "[ars, ars_hf, sps, sps_hf, hf_generate, hf_assisted]", "[2]")
    assert methods[:3] == [("ars", None, None), ("ars_hf", None, None), ("hf_generate", None, None)]
    # HF has no "target drafts for itself" mode and no prompt-lookup + model hybrid: no peer for either
    peers = [m for m in methods if m[0] in ("hf_assisted", "sps_hf")]
    assert peers == [("hf_assisted", "ngram", 2), ("sps_hf", "ngram", 2)]
    assert len([m for m in methods if m[0] == "sps"]) == 3 + 2 + 1  # SpS itself runs at every K
    every_k = _methods(tmp_path, "[ars, sps, hf_assisted]", "null")
    assert [m for m in every_k if m[0] == "hf_assisted"] == [("hf_assisted", "ngram", k) for k in (1, 2, 3)]
    # a hybrid has no draft-only rows either: its model alone is not the hybrid
    assert ("draft_only", "ngram+distilled", None) not in _methods(tmp_path, "[ars, sps, draft_only]", "null")
    # the new kinds run only when listed: the default method list leaves them out
    assert not {"ars_hf", "sps_hf"} & {m.kind for m in main_methods(load_config("default"))}


def test_results_of_a_config_without_a_newer_setting_still_resume():
    saved = {"name": "x", "k_values": [4]}
    assert _same_config(saved, {**saved, "peer_k_values": None})  # added later, at its default
    assert not _same_config(saved, {**saved, "peer_k_values": [4]})
    assert not _same_config({**saved, "peer_k_values": None}, {**saved, "peer_k_values": [4]})
    # a setting added inside a sweep (ignore_eos): the SmolLM2 run of 2026-11-22 still resumes, and a
    # changed value still refuses
    manifest = json.loads((REPO / "tests/fixtures/smollm2-run-2026-11-22/manifest.json").read_text())["config"]
    resolved = json.loads(json.dumps(json_safe(dataclasses.asdict(resolve_config(manifest, "saved")))))
    assert "ignore_eos" not in manifest["sweeps"]["k"] and resolved["sweeps"]["k"]["ignore_eos"] is False
    assert _same_config(manifest, resolved)
    resolved["sweeps"]["k"]["ignore_eos"] = True
    assert not _same_config(manifest, resolved)


TINY_PAIR = """\
include: {defaults}
name: tiny-pair
target: {{name: {target}}}
drafts: [{{name: ngram, k_values: [1, 2]}}, {{name: {draft}, k_values: [1, 2]}}]
methods: [ars, ars_hf, sps, sps_hf, hf_generate, hf_assisted]
peer_k_values: [2]
tasks: {{xsum: {{rows: [0, 2], modes: [greedy], max_new_tokens: 5, max_prompt_tokens: 80}}}}
warmup_tokens: 3
"""


def test_hf_forward_kinds_run_analyse_and_report_with_tiny_models(tmp_path, smollm2, single_thread):
    """ars_hf and sps_hf on a tiny random Llama pair (saved with SmolLM2's tokenizer, so the task prompts
    tokenize): the rows exist where configured, greedy SpS on the HF forward reproduces ArS on it, which
    reproduces plain generate() (the same fp32 forward); the analysis labels and pairs them, and the default
    report renders them."""
    from reproduce.analysis.summary import analyse
    from reproduce.report.render import render_report
    from reproduce.runs.runner import run_experiment

    for name, seed in (("target", 1), ("draft", 2)):
        tiny = tiny_random_model("llama", vocab_size=smollm2.vocab_size, seed=seed)
        tiny.model.save_pretrained(tmp_path / name)
        smollm2.tokenizer.save_pretrained(tmp_path / name)
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(TINY_PAIR.format(defaults=EXPERIMENTS_DIR / "base.yaml", target=tmp_path / "target",
                                            draft=tmp_path / "draft"))
    out = run_experiment(load_config(config_path), tmp_path / "out", progress=False)
    rows = read_rows(out)
    draft = str(tmp_path / "draft")
    kinds = {(r["method"], r["draft"], r["k"]) for r in rows}
    assert {("ars_hf", None, None), ("sps_hf", "ngram", 2), ("sps_hf", draft, 2), ("hf_assisted", draft, 2)} <= kinds
    assert not {m for m in kinds if m[0] in ("sps_hf", "hf_assisted") and m[2] != 2}
    assert len(rows) == 2 * (3 + 4 + 2 * 2)  # prompts x (ArS kinds + SpS + peers)
    greedy = {(r["example_id"], r["method"], r["draft"], r["k"]): r["generated_ids"] for r in rows}
    for (example, method, _, _), ids in greedy.items():
        if method in ("sps_hf", "hf_generate"):
            assert ids == greedy[(example, "ars_hf", None, None)], method

    summary = analyse(out)
    variants = {e["variant"] for e in summary["methods"]}
    assert {"ArS (HF forward)", "SpS (HF forward)[ngram,K=2]", f"SpS (HF forward)[{draft},K=2]"} <= variants
    generate = next(e for e in summary["methods"] if e["method"] == "hf_generate")
    assert generate["ours_vs_hf"]["n"] == 2 and generate["ours_hf_forward_vs_hf"]["n"] == 2
    assert {t["variant"].split("[")[0] for t in summary["theory"]} <= {"SpS"}  # no HF-forward rows in the theory
    markdown = render_report(out, tmp_path / "report" / "results.md").read_text()
    assert "| ArS (HF forward) |" in markdown and "| SpS (HF forward)[ngram,K=2] |" in markdown


def test_the_pool_builds_one_copy_of_a_models_weights_per_runtime(tmp_path):
    """A draft model listed under several names (alone, inside a hybrid, in another runtime) is loaded once and
    built once per runtime; every drafter gets a cache of its own over those weights."""
    from reproduce.runs.pool import ModelPool

    config = load_config(_write(tmp_path, "target: {name: tiny-random-llama}\ndrafts:\n"
                                "  - {name: d8, model: tiny-random-llama, runtime: fast-int8}\n"
                                "  - {name: h8, model: ngram+tiny-random-llama, runtime: fast-int8}\n"
                                "  - {name: d32, model: tiny-random-llama, runtime: fast-fp32}\n"
                                "tasks: {}\nsweeps: {}\n"))
    pool = ModelPool(config)
    assert len(pool._loaded) == 1 and len(pool._built) == 2
    int8, hybrid, fp32 = (pool.drafters[name] for name in ("d8", "h8", "d32"))
    assert int8.lm.layers[0].qkv is hybrid.model.lm.layers[0].qkv  # shared weights ...
    assert int8.lm.keys is not hybrid.model.lm.keys  # ... separate caches
    assert fp32.lm.linear_mode == "fp32" and fp32.lm.layers[0].qkv is not None


def test_the_paper_regime_block_picks_its_target_mode_with_the_drafts_cost(tmp_path, monkeypatch):
    """A block in the paper's regime (auto-flattest) gets the flattest mode that leaves its draft at c <= 0.15: the
    draft is probed first (its fastest single token, fp32 at 10 ms here), so int8, flattest but at 20 ms (c = 0.5),
    gives way to bf16 (70 ms, c = 0.14); the manifest's record holds the draft's cost. The main target (auto, chosen
    for the cheapest draft's cost too) keeps int8, the least expected SpS time, and its record says what draft cost it assumed."""
    from reproduce.engine import runtime
    from reproduce.engine.probe import ModeProbe
    from reproduce.runs.pool import ModelPool

    curves = {"int8": [20] * 9, "bf16": [70, 72, 75, 80, 85, 90, 95, 100, 105], "fp32": [10, 30, 40, 50, 60, 70, 80,
                                                                                     90, 100]}
    monkeypatch.setattr(runtime, "probe_model", lambda config, vocab: [
        ModeProbe(mode, dict(enumerate(curve, start=1)), mode != "fp32") for mode, curve in curves.items()])
    config = load_config(_write(tmp_path, "target: {name: tiny-random-llama}\n"
                                "drafts: [{name: d, model: tiny-random-llama}, "
                                "{name: d8, model: tiny-random-llama, runtime: fast-int8}]\n"
                                "tasks: {humaneval: {rows: [0, 1], modes: [greedy]}}\n"
                                "sweeps: {paper: {task: humaneval, mode: greedy, draft: d, vary: k, values: [2], "
                                "target_runtime: auto-flattest}}\n"))
    pool = ModelPool(config)
    assert pool.runtimes == {"target": "fast-int8", "target@paper": "fast-bf16", "d": "fast-fp32", "d8": "fast-int8"}
    assert pool.drafts["d"].probe_ms == 10
    assert pool.drafts["d8"].probe_ms == 20  # a named runtime's cost comes from the same probe
    record = pool.runtime_choices["target@paper"]
    assert record["draft_ms"] == 10 and "c = 0.14" in record["reason"]
    main = pool.runtime_choices["target"]
    assert main["draft_ms"] == 10 and "draft 10 ms" in main["reason"]


def test_a_paper_regime_block_with_k_auto_plans_the_k_its_target_choice_expects_best(tmp_path, monkeypatch):
    """values: [auto] in a block with an auto target runtime: the pool offers the probe K = 1..8, the choice fixes
    the mode (the flattest that leaves the draft cheap) and its K (the most predicted speedup over ArS in that mode
    at the block's acceptance), and the plan runs that K. bf16 here (int8 leaves the 10 ms draft at c = 0.5): K = 4
    at acceptance 0.8, K = 6 at 0.9 by Leviathan's formula over its curve. The config keeps [auto] (so a rerun
    resumes), the manifest's record the K; a target runtime that is not probed gets a one-line error naming the fix."""
    from reproduce.engine import runtime
    from reproduce.engine.probe import ModeProbe
    from reproduce.runs.plan import plan_units
    from reproduce.runs.pool import ModelPool

    curves = {"int8": [20] * 9, "bf16": [70, 72, 75, 80, 85, 90, 95, 100, 105], "fp32": [10, 30, 40, 50, 60, 70, 80,
                                                                                     90, 100]}
    monkeypatch.setattr(runtime, "probe_model", lambda config, vocab: [
        ModeProbe(mode, dict(enumerate(curve, start=1)), mode != "fp32") for mode, curve in curves.items()])
    for acceptance, k in [("", 4), (", acceptance: 0.9", 6)]:
        config = load_config(_write(tmp_path, "target: {name: tiny-random-llama}\n"
                                    "drafts: [{name: d, model: tiny-random-llama}]\n"
                                    "tasks: {humaneval: {rows: [0, 1], modes: [greedy]}}\n"
                                    "sweeps: {paper: {task: humaneval, mode: greedy, draft: d, vary: k, values: [auto], "
                                    f"rows: [0, 2], target_runtime: auto-flattest{acceptance}}}}}\n"))
        pool = ModelPool(config)
        record = pool.runtime_choices["target@paper"]
        assert pool.runtimes["target@paper"] == "fast-bf16" and record["k"] == k, record["reason"]
        assert record["k_options"] == list(range(1, 9)) and f"K={k}, t({k + 1})/t(1)" in record["reason"]
        assert list(config.sweeps["paper"].values) == ["auto"]  # the config keeps it: a rerun resumes
        planned = [u for u in plan_units(pool.planned_config()) if u.block == "paper"]
        assert len(planned) == 2 and {u.sweep_value for u in planned} == {k}
        assert {m.k for u in planned for m in u.methods if m.kind == "sps"} == {k}
    named = load_config(_write(tmp_path, "target: {name: tiny-random-llama, runtime: fast-fp32}\n"
                               "drafts: [{name: d, model: tiny-random-llama}]\n"
                               "tasks: {humaneval: {rows: [0, 1], modes: [greedy]}}\n"
                               "sweeps: {paper: {task: humaneval, mode: greedy, draft: d, vary: k, values: [auto], "
                               "target_runtime: auto}}\n"))
    monkeypatch.setattr(runtime, "fast_eligible", lambda model: False)  # auto resolves to hf: nothing probed
    with pytest.raises(ReproduceError, match="K = auto is chosen by the probe") as error:
        ModelPool(named).planned_config()
    assert "\n" not in str(error.value)


def test_k_auto_blocks_in_the_practical_regime_choose_k_per_task_in_one_mode(tmp_path, monkeypatch):
    """Issue 23's "K may differ per task": a K = auto block per task with the practical target runtime (auto, the
    least expected SpS time) and the task's acceptance. On a curve like the w4a8 target's probe (t(5) jumps: rows in
    blocks of 4) with the draft at c = 0.25, Leviathan's formula puts K = 1 at XSum's 0.6 and K = 3 at HumanEval's
    0.95; both blocks keep the main target's mode, so they decode over its weights (no second copy)."""
    from reproduce.engine import runtime
    from reproduce.engine.probe import ModeProbe
    from reproduce.runs.plan import plan_units
    from reproduce.runs.pool import ModelPool

    curves = {"int8": [40, 41, 44, 48, 60, 63, 76, 84, 109], "bf16": [160, 160, 161, 162, 163, 164, 165, 166, 167],
              "fp32": [10, 30, 40, 50, 60, 70, 80, 90, 100]}  # fp32: the draft's (fastest, not batch-invariant)
    monkeypatch.setattr(runtime, "probe_model", lambda config, vocab: [
        ModeProbe(mode, dict(enumerate(curve, start=1)), mode != "fp32") for mode, curve in curves.items()])
    block = "{{task: {task}, mode: greedy, draft: d, vary: k, values: [auto], acceptance: {alpha}, rows: [0, 1], " \
            "target_runtime: auto}}"
    config = load_config(_write(tmp_path, "target: {name: tiny-random-llama}\n"
                                "drafts: [{name: d, model: tiny-random-llama}]\n"
                                "tasks: {humaneval: {rows: [0, 1], modes: [greedy]}, xsum: {rows: [0, 1], modes: [greedy]}}\n"
                                f"sweeps: {{he: {block.format(task='humaneval', alpha=0.95)}, "
                                f"xs: {block.format(task='xsum', alpha=0.6)}}}\n"))
    pool = ModelPool(config)
    assert pool.runtimes["target@he"] == pool.runtimes["target@xs"] == pool.runtimes["target"] == "fast-int8"
    assert pool.targets["target@he"].lm.layers is pool.target_lm.layers  # the same weights, a cache of its own
    chosen = {block: pool.runtime_choices[f"target@{block}"]["k"] for block in ("he", "xs")}
    assert chosen == {"he": 3, "xs": 1}, [pool.runtime_choices[f"target@{b}"]["reason"] for b in chosen]
    planned = plan_units(pool.planned_config())
    assert {(u.block, m.k) for u in planned if u.block != "main" for m in u.methods if m.kind == "sps"} == \
        {("he", 3), ("xs", 1)}


def test_a_resumed_run_must_decode_in_the_runtimes_and_k_of_its_rows(tmp_path):
    """Resuming where the probe now chooses another mode (another CPU, a cleared cache), or another K for a block
    with K = auto, is a one-line error: a row's key holds neither, so the rows would be pooled across numerics. The
    same choices (or a fresh results directory) pass."""
    from types import SimpleNamespace

    from reproduce.runs.runner import _check_resumed_models

    config = load_config(_write(tmp_path, "target: {name: tiny-random-llama}\n"
                                "drafts: [{name: d, model: tiny-random-llama}]\n"
                                "tasks: {humaneval: {rows: [0, 1], modes: [greedy]}}\n"
                                "sweeps: {paper: {task: humaneval, mode: greedy, draft: d, vary: k, values: [auto], "
                                "target_runtime: auto-flattest}}\n"))

    def pool(runtime, k):
        models = {"target": {"runtime": "fast-w4a8"}, "target@paper": {"runtime": runtime},
                  "d": {"runtime": "fast-w4a8"}}
        return SimpleNamespace(config=config, describe=lambda: models,
                               runtime_choices={"target@paper": {"runtime": runtime, "k": k}})

    saved = pool("fast-w16a32", 3)
    manifest = {"models": saved.describe(), "runtime_choices": saved.runtime_choices}
    _check_resumed_models(manifest, pool("fast-w16a32", 3), tmp_path)  # the same choices: resumes
    _check_resumed_models({}, pool("fast-int8", 8), tmp_path)  # nothing recorded (an older manifest): resumes
    for changed, message in [(pool("fast-int8", 3), "target@paper ran in fast-w16a32, now fast-int8"),
                             (pool("fast-w16a32", 8), "target@paper ran at K = 3, now 8")]:
        with pytest.raises(ReproduceError, match="resume it where its probes are cached") as error:
            _check_resumed_models(manifest, changed, tmp_path)
        assert message in str(error.value) and "\n" not in str(error.value)


def test_llamacpp_peers_plan_like_the_hf_peers_and_drop_out_without_llama_cpp(tmp_path, monkeypatch):
    """llama.cpp's plain decoding once per prompt; its prompt lookup per n-gram draft at the peer K values. Without
    llama-cpp-python (a failed build) neither is planned: the run goes on and the report says they were not
    measured."""
    from reproduce.runs import plan

    monkeypatch.setattr(plan, "llamacpp_installed", lambda: True)
    methods = _methods(tmp_path, "[ars, sps, llamacpp_ars, llamacpp_ngram]", "[2]")
    assert [m for m in methods if m[0].startswith("llamacpp")] == [("llamacpp_ars", None, None),
                                                                   ("llamacpp_ngram", "ngram", 2)]
    monkeypatch.setattr(plan, "llamacpp_installed", lambda: False)
    methods = _methods(tmp_path, "[ars, sps, llamacpp_ars, llamacpp_ngram]", "[2]")
    assert methods and not [m for m in methods if m[0].startswith("llamacpp")]


def test_method_scopes_keep_a_kind_to_its_tasks_and_modes(tmp_path, monkeypatch):
    """llama.cpp's peers scoped to HumanEval greedy (where the report's peer table reads them): every other task and
    mode plans the same methods without them, and unscoped kinds run everywhere."""
    from reproduce.runs import plan

    monkeypatch.setattr(plan, "llamacpp_installed", lambda: True)
    monkeypatch.setattr(plan, "speculative_tool", lambda: Path("llama-speculative-simple"))
    data, _ = read_config_data("default")
    config = resolve_config(data, "default")
    assert config.method_scopes == load_config("default").method_scopes  # the profile make reproduce runs
    units = [u for u in plan.plan_units(config) if u.block == "main"]
    assert {(u.task, u.mode) for u in units} == {("humaneval", "greedy"), ("humaneval", "code_nucleus"),
                                                 ("xsum", "greedy"), ("xsum", "xsum_nucleus")}
    for unit in units:
        kinds = {m.kind for m in unit.methods}
        assert {"ars", "sps"} <= kinds
        peers = kinds & {"llamacpp_ars", "llamacpp_ngram", "llamacpp_draft"}
        assert peers == ({"llamacpp_ars", "llamacpp_ngram", "llamacpp_draft"} if (unit.task, unit.mode) == ("humaneval", "greedy")
                         else set()), (unit.task, unit.mode)
