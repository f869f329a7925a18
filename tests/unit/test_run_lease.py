"""The run's work lease against in-memory fakes: a duplicate delivery of a start or a collection
waits for the one doing the work instead of doing it again; a dead holder's lease is taken over."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from services.postprocess.handlers import collect_run
from services.preprocess.handlers import start_run
from shared.domain.runs import Run
from shared.domain.spec import RunSpec
from shared.messages import CollectRun, StartRun
from shared.run_lease import run_lease
from shared.settings import Settings
from tests.unit.fakes import FakeObjects, FakeQueues, FakeRuntime, FakeStore

RUN_ID = "0123456789abcdef0123456789abcdef"
SPEC = RunSpec(model_id="anthropic.claude-3-haiku-20240307-v1:0", template="Summarize: {{ text }}")
INPUT = "s3://quarry-inputs/incoming/summarize/r.csv"
CSV = b"text\n" + b"".join(f"review {n}\n".encode() for n in range(5))
START = StartRun(run_id=RUN_ID, input_uri=INPUT, spec=SPEC, origin="s3", source_key=f"{INPUT}#etag1")


class SlowCountingObjects(FakeObjects):
    """Counts the input's reads, each slow enough that two deliveries overlap."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        super().__init__(objects)
        self.opens = 0

    def open(self, uri: str):
        self.opens += 1
        time.sleep(0.3)  # in staging's worker thread: the event loop runs the other delivery meanwhile
        return super().open(uri)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(workdir=tmp_path / "work", min_records_per_job=2, max_records_per_job=3,
                    run_lease_s=1.0, run_lease_poll_s=0.02)


async def start(store, queues, objects, settings) -> None:
    await start_run(START, store=store, queues=queues, objects=objects, runtime=FakeRuntime(), settings=settings)


async def test_given_two_deliveries_of_one_start_at_once_when_both_run_then_the_input_is_staged_once(settings):
    store, queues, objects = FakeStore(), FakeQueues(), SlowCountingObjects({INPUT: CSV})

    await asyncio.wait_for(asyncio.gather(start(store, queues, objects, settings),
                                          start(store, queues, objects, settings)), 10)

    run = await store.get_run(RUN_ID)
    assert objects.opens == 1
    assert run.status == "RUNNING"
    assert len(queues.to("submit")) == run.jobs_total == len(await store.list_jobs(RUN_ID))


async def test_given_a_holder_that_died_when_its_lease_expires_then_a_redelivery_takes_it_over_and_stages(settings):
    store, queues, objects = FakeStore(), FakeQueues(), SlowCountingObjects({INPUT: CSV})
    await store.create_run(Run(run_id=RUN_ID, spec=SPEC, input_uri=INPUT, origin="s3", source_key=START.source_key))
    assert await store.take_run_lease(RUN_ID, "staging", "a-worker-killed-while-staging", 0.5)

    await asyncio.wait_for(start(store, queues, objects, settings), 10)

    assert (await store.get_run(RUN_ID)).status == "RUNNING"
    assert objects.opens == 1
    assert "RUN#" + RUN_ID + "#staging" not in store.leases  # given back once done


async def test_given_a_holder_still_working_when_its_lease_would_have_expired_then_renewals_keep_it(settings):
    store = FakeStore()
    await store.create_run(Run(run_id=RUN_ID, spec=SPEC, input_uri=INPUT, origin="s3", source_key="x"))

    async with run_lease(store, RUN_ID, "staging", seconds=0.3, poll_s=0.02):
        await asyncio.sleep(0.8)  # well past 0.3 s: only renewals keep the lease
        taken_by_another = await store.take_run_lease(RUN_ID, "staging", "another", 0.3)

    assert not taken_by_another
    assert await store.take_run_lease(RUN_ID, "staging", "another", 0.3)  # free once given back


async def test_given_a_collection_in_progress_when_a_duplicate_collect_arrives_then_it_waits_and_then_looks_again(
        settings):
    store, queues = FakeStore(), FakeQueues()
    # Cancelled before staging: collecting it ends the run, a change the duplicate must not make early.
    await store.create_run(Run(run_id=RUN_ID, spec=SPEC, input_uri=INPUT, origin="s3", source_key="x",
                               status="CANCELLING"))
    holder = "the-delivery-collecting-now"
    assert await store.take_run_lease(RUN_ID, "collecting", holder, 60)

    duplicate = asyncio.create_task(collect_run(CollectRun(run_id=RUN_ID), store=store, queues=queues,
                                                objects=FakeObjects(), runtime=FakeRuntime(), settings=settings))
    await asyncio.sleep(0.2)
    waited = (await store.get_run(RUN_ID)).status
    await store.release_run_lease(RUN_ID, "collecting", holder)
    await asyncio.wait_for(duplicate, 5)

    assert waited == "CANCELLING"
    assert (await store.get_run(RUN_ID)).status == "CANCELLED"
    assert [message.outcome for message in queues.to("notify")] == ["CANCELLED"]


async def test_given_a_holder_killed_after_it_started_the_run_when_a_duplicate_waits_then_it_drops_at_once(settings):
    store, queues, objects = FakeStore(), FakeQueues(), SlowCountingObjects({INPUT: CSV})
    await store.create_run(Run(run_id=RUN_ID, spec=SPEC, input_uri=INPUT, origin="s3", source_key=START.source_key))
    # The holder staged and moved the run on, then died before giving its lease back.
    assert await store.take_run_lease(RUN_ID, "staging", "killed-after-the-move", 60)
    await store.move_run(await store.get_run(RUN_ID), "RUNNING", total_rows=5)

    await asyncio.wait_for(start(store, queues, objects, settings), 2)

    assert objects.opens == 0
    assert queues.sent == []
