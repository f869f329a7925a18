"""Concurrent runtime calls of one model share engine calls (infra/local_bedrock/coalesce.py)."""
from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from infra.local_bedrock.coalesce import Coalescer


class Engine:
    """Answers a batch with each body upper-cased, recording the batches; the first call can be
    held until released, so that others queue behind it."""

    def __init__(self, *, hold_first: bool = False, fail_on: str | None = None) -> None:
        self.batches: list[list[str]] = []
        self.release = threading.Event()
        if not hold_first:
            self.release.set()
        self.fail_on = fail_on

    def __call__(self, bodies):
        self.batches.append(list(bodies))
        if len(self.batches) == 1:
            self.release.wait(5)
        if self.fail_on in bodies:
            raise RuntimeError(f"engine failed on {self.fail_on}")
        return [body.upper() for body in bodies]


@pytest.fixture
def executor():
    with ThreadPoolExecutor(max_workers=4) as pool:
        yield pool


async def until(predicate, timeout=5.0):
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


async def behind_a_busy_engine(coalescer, engine, bodies: str):
    """The first body's call in the (held) engine, then a call for each of the others, queued."""
    first = asyncio.ensure_future(coalescer.call("m", engine, bodies[0]))
    await until(lambda: len(engine.batches) == 1)  # started at once: not waiting for company
    rest = [asyncio.ensure_future(coalescer.call("m", engine, body)) for body in bodies[1:]]
    await asyncio.sleep(0.05)
    return first, rest


def test_calls_that_arrive_while_the_engine_is_busy_are_answered_by_one_engine_call(executor):
    async def scenario():
        engine = Engine(hold_first=True)
        first, rest = await behind_a_busy_engine(Coalescer(executor, max_batch=16), engine, "abcde")
        engine.release.set()
        return engine, await first, await asyncio.gather(*rest)

    engine, first, rest = asyncio.run(scenario())

    assert first == "A" and rest == ["B", "C", "D", "E"], "each caller gets its own answer"
    assert engine.batches == [["a"], ["b", "c", "d", "e"]]


def test_a_lone_call_starts_at_once_and_batches_never_exceed_the_limit(executor):
    async def scenario():
        engine = Engine(hold_first=True)
        first, rest = await behind_a_busy_engine(Coalescer(executor, max_batch=3), engine, "abcdefgh")
        engine.release.set()
        return engine, [await first, *await asyncio.gather(*rest)]

    engine, answers = asyncio.run(scenario())

    assert answers == list("ABCDEFGH")
    assert engine.batches == [["a"], ["b", "c", "d"], ["e", "f", "g"], ["h"]]


def test_different_keys_never_share_a_batch(executor):
    async def scenario():
        engine = Engine(hold_first=True)
        other = Engine()
        coalescer = Coalescer(executor, max_batch=16)
        first = asyncio.ensure_future(coalescer.call("m", engine, "a"))
        await until(lambda: len(engine.batches) == 1)
        elsewhere = await coalescer.call("other", other, "x")  # not held up by m's busy engine
        queued = asyncio.ensure_future(coalescer.call("m", engine, "b"))
        engine.release.set()
        return engine, other, elsewhere, await first, await queued

    engine, other, elsewhere, first, queued = asyncio.run(scenario())

    assert (elsewhere, first, queued) == ("X", "A", "B")
    assert engine.batches == [["a"], ["b"]] and other.batches == [["x"]]


def test_an_engine_failure_reaches_only_the_call_whose_body_raised_it_and_the_line_keeps_moving(executor):
    async def scenario():
        engine = Engine(hold_first=True, fail_on="c")
        coalescer = Coalescer(executor, max_batch=2)
        first, rest = await behind_a_busy_engine(coalescer, engine, "abcd")
        engine.release.set()
        answers = await asyncio.gather(first, *rest, return_exceptions=True)
        later = await coalescer.call("m", engine, "e")  # the key is free again
        return engine, answers, later

    engine, answers, later = asyncio.run(scenario())

    assert answers[0] == "A" and answers[1] == "B" and answers[3] == "D" and later == "E"
    assert isinstance(answers[2], RuntimeError) and "engine failed on c" in str(answers[2])
    # the failed batch is run again one body at a time; c's next batch-mate was not held up by it
    assert engine.batches == [["a"], ["b", "c"], ["b"], ["c"], ["d"], ["e"]]


def test_a_lone_call_that_fails_is_run_once(executor):
    async def scenario():
        engine = Engine(fail_on="x")
        coalescer = Coalescer(executor, max_batch=4)
        with pytest.raises(RuntimeError, match="engine failed on x"):
            await coalescer.call("m", engine, "x")
        return engine

    assert asyncio.run(scenario()).batches == [["x"]]


def test_a_caller_that_went_away_is_not_generated_for_and_breaks_nothing(executor):
    async def scenario():
        engine = Engine(hold_first=True)
        coalescer = Coalescer(executor, max_batch=16)
        first = asyncio.ensure_future(coalescer.call("m", engine, "a"))
        await until(lambda: len(engine.batches) == 1)
        gone = asyncio.ensure_future(coalescer.call("m", engine, "b"))
        kept = asyncio.ensure_future(coalescer.call("m", engine, "c"))
        await asyncio.sleep(0.02)
        gone.cancel()
        engine.release.set()
        return engine, await first, await kept

    engine, first, kept = asyncio.run(scenario())

    assert (first, kept) == ("A", "C")
    assert engine.batches == [["a"], ["c"]]
