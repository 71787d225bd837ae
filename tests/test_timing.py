"""reproduce.engine.timing.time_rows, the one timing loop of the probes and benchmarks, on fake LMs and a fake clock:
what each call sees in the cache, the round-robin order, which rounds are dropped and what the medians are over."""

from __future__ import annotations

import time

import pytest

from reproduce.engine.timing import time_rows


class FakeLM:
    """A cache of token ids, as CachedLM keeps one: forward appends, rollback cuts, reset empties."""

    def __init__(self):
        self.cache: list[int] = []

    def reset(self) -> None:
        self.cache = []

    def forward(self, token_ids, last_only=False):
        self.cache.extend(token_ids)

    def rollback(self, length: int) -> None:
        del self.cache[length:]


def test_calls_run_round_robin_on_the_context_and_warm_up_rounds_are_dropped():
    lms = {"a": FakeLM(), "b": FakeLM()}
    context, new = [1, 2, 3], [7, 8, 9]
    calls = []

    def fake_ms(lm, token_ids):
        name = "a" if lm is lms["a"] else "b"
        assert lm.cache == context, "every timed call starts from exactly the context"
        lm.forward(token_ids)
        calls.append((name, len(token_ids)))
        round_number = sum(1 for c in calls if c == (name, len(token_ids))) - 1
        # warm-up round: a huge time that must not reach the median; then n * 10 + round
        return 1e6 if round_number == 0 else len(token_ids) * 10 + round_number

    result = time_rows(lms, context, new, {"a": [1, 2], "b": [1]}, repeats=3, timed_call=fake_ms)

    one_round = [("a", 1), ("b", 1), ("a", 2)]
    assert calls == one_round * 4  # 1 warm-up + 3 rounds, (n, LM) interleaved inside each round
    assert result == {"a": {1: 12, 2: 22}, "b": {1: 12}}  # medians of rounds 1..3: n * 10 + 2
    assert all(lm.cache == context for lm in lms.values())


def test_more_warm_up_rounds_drop_more_rounds_and_an_iterator_serves_every_lm():
    lms = {"a": FakeLM(), "b": FakeLM()}
    times = iter(range(100))  # a clock: each call takes one more ms than the one before

    result = time_rows(lms, [5], [6, 7], iter([1, 2]), repeats=3, warmup_rounds=2,
                       timed_call=lambda lm, ids: next(times))

    # 4 calls a round ((n, LM) interleaved): rounds 0-1 (calls 0-7) dropped, rounds 2-4 kept; medians: round 3's
    assert result == {"a": {1: 12, 2: 14}, "b": {1: 13, 2: 15}}


def test_default_call_is_the_wall_time_of_forward_and_rows_need_enough_new_tokens():
    class SlowLM(FakeLM):
        def forward(self, token_ids, last_only=False):
            super().forward(token_ids)
            if not last_only:
                time.sleep(0.005 * len(token_ids))

    lm = SlowLM()
    result = time_rows({"x": lm}, [5], [6, 7], [1, 2], repeats=2)
    assert 5 <= result["x"][1] < result["x"][2] and result["x"][2] >= 10
    assert lm.cache == [5]
    with pytest.raises(ValueError, match="new tokens"):
        time_rows({"x": lm}, [5], [6], [1, 2], repeats=1)
