"""Labels the report's views and figures share: a draft's short name, a row's display label, a sampling mode's
words, and the task and draft facts of the vocabularies (reproduce.tasks.TASKS, reproduce.catalogue)."""

from __future__ import annotations

from reproduce.catalogue import draft_kind, parse_draft
from reproduce.report.format import fmt_value
from reproduce.tasks import TASKS

TASK_LABELS = {name: task.label for name, task in TASKS.items()}


def short_draft(draft: str | None) -> str | None:
    """A draft given as a path is labelled by its last component."""
    return parse_draft(draft).label if draft else draft


def entry_label(entry: dict) -> str:
    draft = entry["draft"]
    return entry["variant"].replace(draft, short_draft(draft)) if draft else entry["variant"]


def mode_label(temperature: float, top_p: float) -> str:
    return "greedy" if temperature == 0 else f"nucleus (T={fmt_value(temperature)}, top-p={fmt_value(top_p)})"


def config_draft_kind(config: dict, name: str) -> str:
    """The kind of the config's draft `name` (catalogue.draft_kind: its `model`, where given, says what it is)."""
    return draft_kind(next(d for d in config["drafts"] if d["name"] == name)).kind
