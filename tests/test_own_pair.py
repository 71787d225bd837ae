"""Testing your own target/draft pair from the command line (README, "Test your own pair").

Method: two tiny random Llama models (one architecture, different seeds; saved with SmolLM2's tokenizer so the
task prompts tokenize, and loaded by directory as a user's own checkpoints would be) go through the one-command
form `python -m reproduce run --target DIR --draft DIR --tasks ...`, in process through `cli.main`, to a
rendered report; the rows, the tidy rows.csv, the stored config.yaml and the report's paper caveat are checked.
The resolved config.yaml is rerun (it resumes: no new rows), `--set` is checked against the YAML path (the same
config object), and a misspelt `--set` key fails in one line with a did-you-mean. No test loads a real model.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest

from reproduce.cli import main
from reproduce.engine.models import tiny_random_model
from reproduce.offline import cache_dir
from reproduce.runs.config import EXPERIMENTS_DIR, load_config
from reproduce.runs.overrides import build_config
from reproduce.runs.results import read_rows

TOKENIZER_CACHE = cache_dir() / "models" / "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def tokenizer(request):
    """SmolLM2's tokenizer alone (from the converted copy when there is one; else the model is converted once)."""
    if (TOKENIZER_CACHE / "tokenizer.json").is_file():
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(TOKENIZER_CACHE))
    return request.getfixturevalue("smollm2").tokenizer


@pytest.fixture(scope="module")
def pair(tmp_path_factory, tokenizer):
    """A user's target and draft: two tiny random Llama checkpoints in directories."""
    root = tmp_path_factory.mktemp("pair")
    for name, seed in (("big", 1), ("small", 2)):
        tiny = tiny_random_model("llama", vocab_size=len(tokenizer), seed=seed, max_position_embeddings=2048)
        tiny.model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    return {"target": str(root / "big"), "draft": str(root / "small")}


def _one_command(pair, out: Path, *extra: str) -> list[str]:
    return ["run", "--target", pair["target"], "--draft", f"ngram,{pair['draft']}", "--tasks", "xsum:2,pubmedqa:2",
            "--k", "2", "--modes", "greedy", "--set", "threads=1", "--set", "warmup_tokens=2",
            "--set", "tasks.xsum.max_new_tokens=6", "--set", "tasks.pubmedqa.max_new_tokens=6",
            "--set", "tasks.xsum.max_prompt_tokens=96", "--set", "tasks.pubmedqa.max_prompt_tokens=96",
            "--out", str(out), *extra]


@pytest.fixture(scope="module")
def run(pair, tmp_path_factory, single_thread):
    """The one command, run once; then the report with its default output path."""
    out = tmp_path_factory.mktemp("results") / "mine"
    assert main(_one_command(pair, out)) == 0
    assert main(["report", str(out)]) == 0
    return out


def test_one_command_runs_a_pair_the_paper_never_ran_to_a_report(run, pair):
    rows = read_rows(run)
    methods = {(r["method"], r["draft"], r["k"]) for r in rows}
    assert methods == {("ars", None, None), ("hf_generate", None, None), ("sps", "ngram", 2),
                       ("sps", pair["draft"], 2), ("hf_assisted", "ngram", 2), ("hf_assisted", pair["draft"], 2),
                       ("draft_only", pair["draft"], None)}
    assert len(rows) == 2 * 2 * len(methods)  # tasks x prompts x methods
    assert {r["task"] for r in rows} == {"xsum", "pubmedqa"} and {r["mode"] for r in rows} == {"greedy"}
    greedy = {(r["task"], r["example_id"], r["method"], r["draft"]): r["generated_ids"] for r in rows}
    for (task, example, method, _), ids in greedy.items():
        if method in ("sps", "hf_generate"):
            assert ids == greedy[(task, example, "ars", None)]  # greedy SpS is ArS token for token

    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["config_name"] == "mine" and manifest["config"]["target"]["name"] == pair["target"]

    text = (run / "report.md").read_text()  # beside the results: the committed reports/results.md is untouched
    appendix = (run / "appendix.md").read_text()
    assert "# Speculative sampling on a CPU: the `mine` experiment" in text
    # XSum greedy has a paper row; PubMedQA was never in the paper's Table 1: it is said, not broken
    assert "| XSum, greedy | 14.10 ms / 7.00 ms | 2.01x |" in text
    assert "PubMedQA, greedy: no paper row, so it is compared with our ArS only and never counted as a reproduction." \
        in text
    assert "[`rows.csv`](rows.csv)" in text and "[Appendix](appendix.md)" in text
    assert "python -m reproduce run --config RESULTS/config.yaml --out RESULTS" in appendix
    for figure in (run / "figures").glob("*.png"):
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_run_records_the_files_and_cpu_it_ran_on(run, pair):
    """The manifest's session holds the sha256 of the user's model files and the task data, and the CPU's
    flags; the report shows them with the commit that rendered it."""
    import hashlib

    session = json.loads((run / "manifest.json").read_text())["sessions"][0]
    target = {Path(r["path"]).name: r for r in session["files"]["models"]["target"]}
    weights = Path(pair["target"]) / "model.safetensors"
    assert target["model.safetensors"]["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert {"config.json", "tokenizer.json"} <= set(target) and pair["draft"] in session["files"]["models"]
    assert set(session["files"]["data"]) == {"xsum", "pubmedqa"}
    assert all(len(r["sha256"]) == 64 for r in session["files"]["data"].values())
    assert set(session["cpu_flags"]) == {"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16"}
    text = (run / "appendix.md").read_text()  # no absolute path: the user's files by their last two components
    assert f"`.../{weights.parent.name}/model.safetensors` |" in text and str(weights) not in text
    assert f"`{target['model.safetensors']['sha256']}` |" in text
    assert "; flags avx2" in text and "- **Rendered** at `" in text


def test_rows_csv_is_one_flat_row_per_prompt_and_method(run):
    table = pd.read_csv(run / "rows.csv")
    assert len(table) == len(read_rows(run))
    for column in ("task", "mode", "method", "draft", "k", "tokens", "ms_per_token", "acceptance",
                   "accepted_per_call", "rouge1", "rouge2", "rougeL", "passed", "perplexity"):
        assert column in table.columns, column
    assert (table["tokens"] > 0).all() and (table["ms_per_token"] > 0).all()
    sps = table[table["method"] == "sps"]
    assert sps["acceptance"].between(0, 1).all() and sps["k"].eq(2).all()
    assert table.loc[table["method"] == "ars", "acceptance"].isna().all()
    assert table["passed"].isna().all()  # no HumanEval here
    # ROUGE against the XSum summaries; PubMedQA is scored by its yes / no / maybe label, the only answer it has
    xsum, pubmedqa = table[table["task"] == "xsum"], table[table["task"] == "pubmedqa"]
    assert xsum["rouge2"].notna().all() and pubmedqa["rouge2"].isna().all()
    assert pubmedqa["correct"].isin([0, 1]).all() and xsum["correct"].isna().all()


def test_the_stored_config_reruns_and_resumes_without_new_rows(run, capsys):
    before = (run / "rows.jsonl").read_text()
    config_file = run / "config.yaml"
    stored = load_config(config_file)  # the complete resolved config, no includes: the manifest's
    assert json.loads(json.dumps(dataclasses.asdict(stored))) == json.loads((run / "manifest.json").read_text())["config"]
    assert main(["run", "--config", str(config_file), "--out", str(run)]) == 0
    captured = capsys.readouterr()
    assert "0 rows to run" in captured.out + captured.err
    assert (run / "rows.jsonl").read_text() == before
    manifest = json.loads((run / "manifest.json").read_text())
    assert len(manifest["sessions"]) == 2


def test_the_same_command_resumes_too(run, pair, capsys):
    before = (run / "rows.jsonl").read_text()
    assert main(_one_command(pair, run)) == 0
    captured = capsys.readouterr()
    assert "0 rows to run" in captured.out + captured.err
    assert (run / "rows.jsonl").read_text() == before


def test_flags_and_set_give_the_config_a_yaml_file_gives(tmp_path, capsys):
    """The flag form resolves to the same ExperimentConfig as the equivalent YAML file."""
    yaml_file = tmp_path / "mine.yaml"
    yaml_file.write_text(f"""\
include: {EXPERIMENTS_DIR / 'base.yaml'}
name: mine
description: target tiny-random-llama with drafts ngram, target (command line)
target: {{name: tiny-random-llama}}
drafts: [{{name: ngram, ngram_size: 2}}, {{name: target}}]
tasks:
  humaneval: {{rows: [0, 20], modes: [greedy, code_nucleus], max_new_tokens: 96, max_prompt_tokens: 1024}}
  xsum: {{rows: [5, 9], modes: [greedy, code_nucleus], max_new_tokens: 64, max_prompt_tokens: 400}}
k_values: [2, 4]
threads: 4
""")
    flags = build_config(target="tiny-random-llama", drafts=["ngram", "target"], tasks="humaneval:20,xsum:30",
                         k="2,4", modes="greedy,code_nucleus", out="results/mine",
                         sets=["threads=4", "tasks.xsum.rows=[5, 9]", "drafts.ngram.ngram_size=2"])
    assert flags == load_config(yaml_file)
    # --set on a profile: one key changed, everything else as the profile says
    default = load_config("default")
    changed = build_config(profile="default", sets=["tasks.xsum.rows=[0,5]", "drafts.0.k_values=[3]"])
    assert changed.tasks["xsum"].rows == (0, 5) and changed.draft("qwen-0.5b").k_values == (3,)
    assert changed.tasks["humaneval"] == default.tasks["humaneval"] and changed.sweeps == default.sweeps
    # --print-config writes the resolved config as YAML that loads back to the same object
    assert main(["run", "--profile", "default", "--set", "tasks.xsum.rows=[0,5]", "--print-config"]) == 0
    printed = tmp_path / "printed.yaml"
    printed.write_text(capsys.readouterr().out)
    assert load_config(printed) == build_config(profile="default", sets=["tasks.xsum.rows=[0,5]"])


@pytest.mark.parametrize("argv, message", [
    (["--set", "tasks.xsum.max_new_token=8"], "tasks.xsum: unknown key 'max_new_token'; did you mean 'max_new_tokens'?"),
    (["--set", "k_valuse=[2]"], "unknown key 'k_valuse'; did you mean 'k_values'?"),
    (["--set", "target.dtpye=bfloat16"], "target: unknown key 'dtpye'; did you mean 'dtype'?"),
    (["--set", "tasks.xsumm.rows=[0,2]"], "unknown task 'xsumm'; did you mean 'xsum'?"),
    (["--tasks", "xsum:300"], "xsum has 200 evaluation rows"),
    (["--tasks", "humaneval:two"], "give a number of prompts"),
    (["--k", "2,four"], "--k takes integers"),
    (["--modes", "greedy,beam"], "uses mode 'beam', which is not defined under modes"),
    (["--set", "threads"], "expected KEY.PATH=VALUE"),
])
def test_a_bad_flag_fails_in_one_line(argv, message, capsys):
    assert main(["run", "--target", "tiny-random-llama", *argv, "--print-config"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err
    assert err.count("\n") == 1  # one line
