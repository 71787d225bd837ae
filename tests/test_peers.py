"""The Hugging Face peers run without deprecation noise.

Method: a tiny random Llama target assisted by another tiny random Llama (no download, a few ms a call). Called
directly, transformers' assisted generation logs, once per process, that passing `generation_config` together
with generation arguments is deprecated: its own candidate generator calls the assistant that way, our call
passes generation arguments only. runs.peers drops that one notice while a peer runs, and conftest fails any
test during which transformers' generation code logs a deprecation notice.
"""

from __future__ import annotations

import logging

import pytest
import torch

from reproduce.engine.models import tiny_random_model
from reproduce.engine.params import SamplingParams
from reproduce.runs import peers
from reproduce.runs.plan import Method, Unit
from reproduce.tasks import Example


class _Notices(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture()
def notices():
    from transformers.utils import logging as hf_logging

    hf_logging.warning_once.cache_clear()  # "once" per process: let this test see it again
    handler, logger = _Notices(), logging.getLogger("transformers")
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)


def test_assisted_generation_logs_no_deprecation_notice(notices, single_thread):
    target, draft = tiny_random_model("llama", seed=1), tiny_random_model("llama", seed=2)
    unit = Unit("main", "xsum", Example("xsum", "x", 0, "doc", "ref"), "greedy", SamplingParams(temperature=0), 6, 80,
                0, 0, ())
    prompt = [1, 2, 3, 4, 5]
    assisted = peers.hf_generate(target, unit, Method("hf_assisted", "tiny", 2), prompt, 0, assistant=draft.model)
    lookup = peers.hf_generate(target, unit, Method("hf_assisted", "ngram", 2), prompt, 0, ngram_size=3)
    plain = peers.hf_generate(target, unit, Method("hf_generate"), prompt, 0)
    assert assisted.tokens == lookup.tokens == plain.tokens  # greedy: every peer decodes the target's argmax path
    peers.warm_up_generate(target, prompt, 3, [draft.model])
    assert not [m for m in notices if "deprecated" in m], notices

    # the notice is transformers' own: its assisted generation emits it for a call with generation arguments only
    from transformers.utils import logging as hf_logging

    class Keep(logging.Filter):  # records the notice and keeps it from conftest's guard
        def __init__(self):
            super().__init__()
            self.messages = []

        def filter(self, record):
            self.messages.append(record.getMessage())
            return False

    hf_logging.warning_once.cache_clear()
    keep, logger = Keep(), logging.getLogger("transformers.generation.utils")
    logger.addFilter(keep)
    try:
        ids = torch.tensor([prompt])
        target.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=3, do_sample=False,
                              pad_token_id=target.eos_token_id, assistant_model=draft.model)
    finally:
        logger.removeFilter(keep)
    assert any(peers.INTERNAL_DEPRECATION in m for m in keep.messages), (
        "transformers no longer logs the notice runs.peers drops: remove INTERNAL_DEPRECATION there")
