"""Experiment configs from the command line (lm-eval-harness / Hydra style), torch-free.

`python -m reproduce run` starts from a base config's plain settings (`--config FILE`, `--profile NAME`, or
experiments/own-pair.yaml when flags name a target, drafts or tasks, else the default profile), replaces what
the flags give (--target, --draft, --tasks, --k, --modes, --methods, --name), applies each
`--set key.path=value` in order, and resolves the result with `config.resolve_config`, the code that resolves
a YAML file: the same ExperimentConfig, the same checks, the same one-line did-you-mean for an unknown key.
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path

import yaml

from reproduce.errors import ReproduceError
from reproduce.runs.config import ExperimentConfig, read_config_data, resolve_config
from reproduce.tasks import TASKS

OWN_PAIR_PROFILE = "own-pair"  # the base of the one-command form: experiments/own-pair.yaml


def build_config(profile: str | None = None, config: str | None = None, target: str | None = None,
                 drafts: list[str] | None = None, tasks: str | None = None, k: str | None = None,
                 modes: str | None = None, methods: str | None = None, name: str | None = None,
                 sets: list[str] | None = None, out: str | None = None) -> ExperimentConfig:
    """The ExperimentConfig of a `run` command line (the arguments are the flags' raw strings)."""
    own_pair = profile is None and config is None and bool(target or drafts or tasks)
    base = config or profile or (OWN_PAIR_PROFILE if own_pair else "default")
    data, source = read_config_data(base)
    data = copy.deepcopy(data)
    template = read_config_data(OWN_PAIR_PROFILE)[0]["tasks"]  # budgets and modes of a task the base lacks
    if target:
        data["target"] = {"name": target}  # a new model: its dtype, runtime etc. via --set target.KEY=VALUE
    if drafts:
        names = [n.strip() for item in drafts for n in item.split(",") if n.strip()]
        known = {d.get("name"): d for d in data.get("drafts") or [] if isinstance(d, dict)}
        data["drafts"] = [copy.deepcopy(known.get(n, {"name": n})) for n in names]
    if tasks:
        data["tasks"] = parse_tasks(tasks, data.get("tasks") or {}, template)
    if k:
        data["k_values"] = _int_list(k, "--k")
        for draft in data.get("drafts") or []:  # --k applies to every draft
            if isinstance(draft, dict):
                draft.pop("k_values", None)
    if modes:
        mode_names = _names(modes)
        for task in (data.get("tasks") or {}).values():
            task["modes"] = list(mode_names)
    if methods:
        data["methods"] = _names(methods)
    if own_pair:
        data["name"] = name or (Path(out).name if out else OWN_PAIR_PROFILE)
        shown_drafts = ", ".join(d["name"] for d in data.get("drafts") or [])
        data["description"] = f"target {data['target']['name']} with drafts {shown_drafts} (command line)"
    elif name:
        data["name"] = name
    for assignment in sets or []:
        apply_set(data, assignment)
    if target or drafts or tasks or k or modes or methods or name or sets:
        source = f"{source} + command line"
    return resolve_config(data, source)


def parse_tasks(spec: str, base: dict, template: dict) -> dict:
    """`humaneval:20,xsum:30` -> tasks settings: only the named tasks, each with its settings from the base
    config (or, where the base lacks it, from experiments/own-pair.yaml) and rows = its first N evaluation rows
    (no `:N`: the base's rows)."""
    out = {}
    for item in _names(spec):
        name, _, count = item.partition(":")
        if name not in TASKS:
            close = difflib.get_close_matches(name, TASKS, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"choose from {', '.join(TASKS)}"
            raise ReproduceError(f"--tasks: unknown task {name!r}; {hint}")
        settings = copy.deepcopy(base.get(name) or template[name])
        eval_rows = TASKS[name].eval_rows
        if count:
            if not count.isdigit() or int(count) < 1:
                raise ReproduceError(f"--tasks {item}: after ':' give a number of prompts >= 1, e.g. {name}:20")
            if int(count) > len(eval_rows):
                raise ReproduceError(f"--tasks {item}: {name} has {len(eval_rows)} evaluation rows; ask for at most "
                                     f"{name}:{len(eval_rows)} (the others are reserved for training drafts)")
            settings["rows"] = [eval_rows.start, eval_rows.start + int(count)]
        out[name] = settings
    return out


def apply_set(data: dict, assignment: str) -> None:
    """Apply one `key.path=value` to the plain settings in place. The value is YAML (`4`, `[0, 5]`, `null`,
    `{temperature: 0.7}`); a list element is addressed by its index or, in `drafts`, by its name. Keys are not
    checked here: resolve_config rejects an unknown one with a did-you-mean, as it does in a YAML file."""
    key, sep, raw = assignment.partition("=")
    path = [part.strip() for part in key.split(".")]
    if not sep or not all(path):
        raise ReproduceError(f"--set {assignment!r}: expected KEY.PATH=VALUE, e.g. --set threads=4 or "
                             "--set tasks.xsum.rows=[0,5]")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ReproduceError(f"--set {key}: the value {raw!r} is not valid YAML ({str(exc).splitlines()[0]})") from None
    node = data
    for depth, part in enumerate(path):
        where = ".".join(path[:depth + 1])
        last = depth == len(path) - 1
        if isinstance(node, list):
            index = _list_index(node, part, where)
            if last:
                node[index] = value
            node = node[index]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            elif node.get(part) is None:
                node[part] = {}  # a new mapping: resolve_config checks its keys
            node = node[part]
        else:
            raise ReproduceError(f"--set {key}: {'.'.join(path[:depth])} is {node!r}, not a mapping or list")


def _list_index(items: list, part: str, where: str) -> int:
    if part.lstrip("-").isdigit() and -len(items) <= int(part) < len(items):
        return int(part)
    names = [item.get("name") for item in items if isinstance(item, dict)]
    if part in names:
        return names.index(part)
    raise ReproduceError(f"--set {where}: no element {part!r}; give an index below {len(items)}"
                         + (f" or a name: {', '.join(map(str, names))}" if any(names) else ""))


def _names(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _int_list(text: str, flag: str) -> list[int]:
    try:
        return [int(item) for item in _names(text)]
    except ValueError:
        raise ReproduceError(f"{flag} takes integers separated by commas, e.g. {flag} 2,4; got {text!r}") from None
