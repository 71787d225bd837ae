"""The paper-style report: reports/results.md (the answer first, then a lean main body), reports/appendix.md
(provenance, probes, config, test list, cost), reports/rows.csv and reports/figures/*.png, from one
experiment's results alone.

`render_report(results_dir)` reads summary.json (which holds the run's manifest) and nothing else of the run:
it only renders, and when the summary is missing or older than rows.jsonl it fails in one line naming
`python -m reproduce analyse DIR`, which writes it. It draws the figures with matplotlib and renders
reports/templates/results.md.j2 and appendix.md.j2 (one template per section, under sections/ and appendix/)
with Jinja2, from one frozen Report record (context.py). Every statistic comes from `reproduce.analysis`; the
views only pick rows (which SpS is fastest, which sweep varies K) and attach labels, numbers are formatted
through the `fmt_*` filters of format.py, and the templates do no arithmetic. `StrictUndefined` makes a missing value fail the render instead of printing a
blank. The paper's own numbers come from reports/paper.yaml (transcribed from Table 1 of arXiv 2302.01318).
The report names the commit that rendered it (`rendering_commit`) beside the commits that ran the experiment
(manifest sessions) and the losslessness tests (their JSON).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from types import MappingProxyType

import jinja2
import yaml

from reproduce.errors import ReproduceError
from reproduce.report.figures import draw_figures
from reproduce.report.format import FILTERS
from reproduce.provenance import git_commit
from reproduce.report.context import Links, Report, Rerun, build_report
from reproduce.report.records import Commit
from reproduce.runs.config import EXPERIMENTS_DIR, load_config, resolve_config
from reproduce.runs.results import CONFIG_FILE, ROWS_FILE, SUMMARY_FILE, TIDY_FILE, json_safe, require_results

REPO = Path(__file__).resolve().parents[2]


TEMPLATES_DIR = REPO / "reports" / "templates"


TEMPLATE, APPENDIX_TEMPLATE = "results.md.j2", "appendix.md.j2"


APPENDIX = "appendix.md"  # written beside the main file


PAPER_FILE = REPO / "reports" / "paper.yaml"


FIGURE_PREFIXES = ("figure1_", "drafts_", "sweep_", "cost_curve", "peers")


MAKE_PROFILE = "default"  # the Makefile's `PROFILE ?= default`: the profile a bare `make reproduce` runs


def load_summary(results_dir: Path) -> dict:
    """summary.json as the analysis wrote it (its "manifest" is the run's manifest.json). Computes nothing: a
    missing summary, or one older than the rows, fails in one line naming the command that writes it."""
    rows, summary = results_dir / ROWS_FILE, results_dir / SUMMARY_FILE
    require_results(results_dir)
    if not summary.is_file():
        raise ReproduceError(f"{results_dir} has no {SUMMARY_FILE}: run `python -m reproduce analyse {results_dir}` "
                             "first")
    if summary.stat().st_mtime < rows.stat().st_mtime:
        raise ReproduceError(f"{summary} is older than {ROWS_FILE}: run `python -m reproduce analyse {results_dir}` "
                             "first")
    return json.loads(summary.read_text())


def _read_losslessness(path: Path) -> tuple[list, dict | None]:
    """(records, provenance) of the JSON `pytest tests/test_losslessness.py --stats-json PATH` writes: an object
    with the commit the tests ran at (git_hash, git_dirty), their start and finish times, the CPU they ran on
    (cpu, cpu_id, cpu_flags; None in files written before it was recorded) and the records; or, as written
    before any of those were recorded, the bare list of records (provenance None)."""
    hint = "write it with `pytest tests/test_losslessness.py --stats-json PATH`"
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ReproduceError(f"cannot read losslessness results {path} ({exc}): {hint}") from None
    records, meta = data, None
    if isinstance(data, dict) and "records" in data:
        records = data["records"]
        meta = {key: data.get(key) for key in ("git_hash", "git_dirty", "started", "finished", "cpu", "cpu_id",
                                               "cpu_flags")}
    if not isinstance(records, list) or not all(isinstance(r, dict) and {"test", "outcome"} <= set(r) for r in records):
        raise ReproduceError(f"{path}: expected a JSON list of test records with 'test' and 'outcome': {hint}")
    return records, meta


def load_losslessness(path: Path | None) -> list[dict] | None:
    """The losslessness tests' results, from the JSON that `pytest tests/test_losslessness.py --stats-json PATH`
    writes: one record per test with its nodeid, phase, outcome, seconds and the statistics it recorded
    (record_property: p-values, draw counts, acceptance). Returns one row per test with those statistics."""
    if path is None:
        return None
    path = Path(path)
    records, _ = _read_losslessness(path)
    records = [r for r in records if "test_losslessness" in r["test"]]
    if not records:
        raise ReproduceError(f"{path} has no results of tests/test_losslessness.py: "
                             "write it with `pytest tests/test_losslessness.py --stats-json PATH`")
    bookkeeping = {"test", "phase", "outcome", "seconds"}

    def statistics(record: dict) -> list[dict]:
        """One entry per scalar; a mapping (e.g. drafted_per_call {1: 401, 2: 2599}) gives one per key."""
        entries = []
        for name, value in record.items():
            if name in bookkeeping:
                continue
            if isinstance(value, dict):
                entries += [{"name": f"{name}[{key}]", "value": item} for key, item in value.items()]
            else:
                entries.append({"name": name, "value": value})
        return entries
    return [{"test": r["test"].split("::", 1)[-1], "phase": r.get("phase", "call"), "outcome": r["outcome"],
             "statistics": statistics(r)} for r in records]


def losslessness_provenance(path: Path | None) -> dict | None:
    """When, at which commit and on which CPU the losslessness tests ran: {"git_hash", "git_dirty", "started",
    "finished", "cpu", "cpu_id", "cpu_flags"} (each None if not recorded), or None when no results are attached
    or their file predates these fields."""
    if path is None:
        return None
    return _read_losslessness(Path(path))[1]


def rendering_commit() -> dict:
    """The commit of the code rendering the report ({"git_hash", "git_dirty"}): the template, views and analysis
    that turned the raw results into text, which can be later than the commit that ran the experiment."""
    return git_commit(REPO)


def jinja_environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES_DIR), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, autoescape=False)
    env.filters.update(FILTERS)
    return env


def render_markdown(report: Report, template: str = TEMPLATE) -> str:
    """One of the report's files (TEMPLATE: the main one, APPENDIX_TEMPLATE) from the Report record."""
    return jinja_environment().get_template(template).render(r=report)


def render_report(results_dir, out_md="reports/results.md", figures_dir=None, losslessness=None,
                  summary: dict | None = None) -> Path:
    """Render out_md, its appendix (APPENDIX beside it) and its figures (default: a `figures/` folder beside
    out_md) from one results directory (its summary.json, read here unless `summary` is given already), and copy
    the per-prompt table rows.csv beside them when the results have one, so every link of the report resolves.
    Returns the main markdown's path."""
    results_dir, out_md = Path(results_dir), Path(out_md)
    rendered_by = rendering_commit()  # before this render rewrites its own (tracked) figures and markdown
    figures_dir = Path(figures_dir) if figures_dir is not None else out_md.parent / "figures"
    summary = load_summary(results_dir) if summary is None else summary
    paper = yaml.safe_load(PAPER_FILE.read_text())
    report = build_report(summary, summary["manifest"], paper, load_losslessness(losslessness),
                          losslessness_provenance(losslessness))
    figures_dir.mkdir(parents=True, exist_ok=True)
    written = draw_figures(report, figures_dir)
    for stale in figures_dir.glob("*.png"):  # figures of an earlier render that this run does not have
        if stale.name.startswith(FIGURE_PREFIXES) and stale not in written.values():
            stale.unlink()
    out_md.parent.mkdir(parents=True, exist_ok=True)
    rows_csv = None
    if (results_dir / TIDY_FILE).is_file():
        rows_csv = out_md.parent / TIDY_FILE
        if not rows_csv.exists() or not rows_csv.samefile(results_dir / TIDY_FILE):
            shutil.copyfile(results_dir / TIDY_FILE, rows_csv)
    appendix = out_md.parent / APPENDIX
    report = dataclasses.replace(
        report, rendered_by=Commit.read(rendered_by),
        figures=MappingProxyType({name: Path(_relative(path, out_md.parent)).as_posix() for name, path in written.items()}),
        links=Links(APPENDIX, out_md.name, TIDY_FILE if rows_csv else None),
        rerun=rerun_commands(results_dir, report.config_name, summary["manifest"]["config"]))
    out_md.write_text(render_markdown(report))
    appendix.write_text(render_markdown(report, APPENDIX_TEMPLATE))
    return out_md


def same_as_profile(config_name: str, saved_config: dict) -> bool:
    """Whether experiments/<config_name>.yaml, as today's code resolves it, is the config this run stored: a
    profile can change after a run (the default moved from SmolLM2 to the Qwen pair), and rerunning it would then
    run another experiment."""
    if not (EXPERIMENTS_DIR / f"{config_name}.yaml").is_file():
        return False
    try:
        profile, saved = load_config(config_name), resolve_config(saved_config, "the run's stored config")
    except (ReproduceError, TypeError, KeyError):  # a config today's code cannot resolve is not today's profile
        return False
    plain = [json.loads(json.dumps(json_safe(dataclasses.asdict(c)))) for c in (profile, saved)]
    return plain[0] == plain[1]


def rerun_commands(results_dir: Path, config_name: str, saved_config: dict) -> Rerun:
    """How to run this experiment again: the profile that reruns it (only when experiments/<name>.yaml still
    resolves to the stored config) with its `make reproduce` line (PROFILE only when it is not the Makefile's
    default); `changed_profile`, the name, when the profile exists but now holds another experiment; `config`,
    the resolved config stored with the results (CONFIG_FILE, named relative to the results directory), if any."""
    current = same_as_profile(config_name, saved_config)
    return Rerun(
        profile=config_name if current else None,
        make=None if not current else "make reproduce" + ("" if config_name == MAKE_PROFILE else f" PROFILE={config_name}"),
        changed_profile=config_name if not current and (EXPERIMENTS_DIR / f"{config_name}.yaml").is_file() else None,
        config=CONFIG_FILE if (results_dir / CONFIG_FILE).is_file() else None)


def _relative(path: Path, start: Path) -> str:
    return os.path.relpath(path.resolve(), start.resolve())


def add_arguments(parser) -> None:
    """Arguments of `python -m reproduce report` (the CLI wires this parser to `report_command`)."""
    parser.add_argument("results_dir", help="results directory of a run, e.g. results/default")
    parser.add_argument("--out", default=None,
                        help="markdown to write (default: reports/results.md for the default profile, the committed "
                             "report; RESULTS_DIR/report.md for any other run)")
    parser.add_argument("--figures", default=None, help="figure directory (default: figures/ beside --out)")
    parser.add_argument("--losslessness", default=None,
                        help="JSON written by `pytest tests/test_losslessness.py --stats-json PATH`")


def default_report_path(results_dir, summary: dict) -> Path:
    """reports/results.md for the default profile (the committed report); beside the results for any other
    run, so rendering your own run never overwrites it."""
    if summary["manifest"].get("config_name") != "default":
        return Path(results_dir) / "report.md"
    return Path("reports/results.md")


def report_command(args) -> int:
    summary = load_summary(Path(args.results_dir))  # the only file of the run the report reads, read once
    out = render_report(args.results_dir, args.out or default_report_path(args.results_dir, summary), args.figures,
                        args.losslessness, summary)
    print(f"report written to {out}")
    return 0
