"""The run's work lease on a real moto server: DynamoDB's conditional update lets one holder at a
time stage a run, an expired lease is taken over, and two deliveries of one start stage it once."""
from __future__ import annotations

import asyncio
from pathlib import Path

import boto3
import pytest

from services.preprocess.handlers import start_run
from shared.adapters.aws import async_clients, sync_client
from shared.adapters.objects import SyncObjects
from shared.adapters.queues import Queues
from shared.adapters.store import RunStore
from shared.domain.runs import Run
from shared.domain.spec import RunSpec
from shared.messages import StartRun, new_id
from shared.settings import Settings
from tests.unit.fakes import FakeRuntime

SPEC = RunSpec(model_id="anthropic.claude-3-haiku-20240307-v1:0", template="Summarize: {{ text }}")


@pytest.fixture
async def aws(moto_env):
    async with async_clients(Settings(), "dynamodb", "sqs") as clients:
        yield clients


@pytest.fixture
def store(aws) -> RunStore:
    return RunStore(aws["dynamodb"], Settings().table)


def a_run(**changes) -> Run:
    return Run(run_id=new_id(), spec=SPEC, input_uri="s3://quarry-inputs/incoming/summarize/x.csv", origin="s3",
               source_key=new_id(), **changes)


async def test_a_held_lease_is_refused_to_another_holder_and_kept_by_its_own(store):
    run = a_run()
    await store.create_run(run)

    assert await store.take_run_lease(run.run_id, "staging", "a", 60)
    assert not await store.take_run_lease(run.run_id, "staging", "b", 60)
    assert await store.take_run_lease(run.run_id, "staging", "a", 60)  # a renewal
    assert await store.take_run_lease(run.run_id, "collecting", "b", 60)  # another work, another lease


async def test_an_expired_lease_is_taken_over(store):
    run = a_run()
    await store.create_run(run)
    assert await store.take_run_lease(run.run_id, "staging", "died", 0.5)

    await asyncio.sleep(0.7)

    assert await store.take_run_lease(run.run_id, "staging", "next", 60)
    assert not await store.take_run_lease(run.run_id, "staging", "died", 60)


async def test_a_lease_is_released_only_by_its_holder(store):
    run = a_run()
    await store.create_run(run)
    assert await store.take_run_lease(run.run_id, "staging", "a", 60)

    await store.release_run_lease(run.run_id, "staging", "b")
    assert not await store.take_run_lease(run.run_id, "staging", "b", 60)
    await store.release_run_lease(run.run_id, "staging", "a")
    assert await store.take_run_lease(run.run_id, "staging", "b", 60)


async def test_a_lease_neither_blocks_nor_is_lost_by_the_runs_versioned_changes(store):
    run = a_run()
    await store.create_run(run)
    assert await store.take_run_lease(run.run_id, "staging", "a", 60)

    moved = await store.move_run(run, "RUNNING", total_rows=5)

    assert (await store.get_run(run.run_id)).version == moved.version == 1
    assert not await store.take_run_lease(run.run_id, "staging", "b", 60)


async def test_no_lease_is_taken_on_a_run_that_does_not_exist(store):
    assert not await store.take_run_lease(new_id(), "staging", "a", 60)


class CountingObjects(SyncObjects):
    """The real S3 adapter, counting reads of the input."""

    def __init__(self, s3) -> None:
        super().__init__(s3)
        self.opened: list[str] = []

    def open(self, uri: str):
        self.opened.append(uri)
        return super().open(uri)


async def test_two_concurrent_deliveries_of_one_start_stage_the_object_once(aws, store, tmp_path: Path):
    settings = Settings(workdir=tmp_path, min_records_per_job=100, max_records_per_job=1_000, run_lease_s=5,
                        run_lease_poll_s=0.05)
    key = f"incoming/summarize/{new_id()}.csv"
    rows = 3_000
    boto3.client("s3").put_object(Bucket=settings.inputs_bucket, Key=key, Body=b"text\n" + b"".join(
        b"review %d\n" % n for n in range(rows)))
    uri = f"s3://{settings.inputs_bucket}/{key}"
    objects = CountingObjects(sync_client(settings, "s3"))
    start = StartRun(run_id=new_id(), input_uri=uri, spec=SPEC, origin="s3", source_key=f"{uri}#etag")
    queues = Queues(aws["sqs"], settings)

    await asyncio.wait_for(asyncio.gather(*(
        start_run(start, store=store, queues=queues, objects=objects, runtime=FakeRuntime(), settings=settings)
        for _ in range(2))), 60)

    run = await store.get_run(start.run_id)
    jobs = await store.list_jobs(start.run_id)
    assert objects.opened == [uri]
    assert (run.status, run.total_rows, run.jobs_total, len(jobs)) == ("RUNNING", rows, 3, 3)
    assert await store.take_run_lease(start.run_id, "staging", "anyone-else", 60)  # given back once staged
