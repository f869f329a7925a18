"""The fakes keep the ports' contracts that handlers rely on; a fake that drifted would let handler
tests pass against behaviour the real adapters do not have."""
from __future__ import annotations

import pytest

from shared.domain.runs import IllegalTransition, Job, Run
from shared.errors import ConflictError
from tests.unit.fakes import FakeBatchJobs, FakeStore

RUN_ID = "0123456789abcdef0123456789abcdef"
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"


def a_run() -> Run:
    return Run(run_id=RUN_ID, spec=None, input_uri="s3://b/k", origin="cli", source_key="cli:1")


def a_job() -> Job:
    return Job(run_id=RUN_ID, job_key="00000-0", index=0, model_id=HAIKU, chunk_uri="s3://b/c", output_uri="s3://b/o/",
               records=1, bytes=1, first_row=0, end_row=1)


async def test_given_two_readers_of_a_run_when_both_write_then_the_second_loses_with_a_conflict():
    store = FakeStore()
    await store.create_run(a_run())
    first, second = await store.get_run(RUN_ID), await store.get_run(RUN_ID)
    await store.move_run(first, "RUNNING")

    with pytest.raises(ConflictError):
        await store.move_run(second, "FAILED", error="late")


async def test_given_a_stale_job_when_written_then_the_write_loses_with_a_conflict():
    store = FakeStore()
    await store.put_new_jobs([a_job()])
    stale = await store.get_job(RUN_ID, "00000-0")
    await store.update_job(stale, processed=1)

    with pytest.raises(ConflictError):
        await store.update_job(stale, processed=2)


async def test_given_a_job_when_moved_illegally_then_the_store_refuses_before_writing():
    store = FakeStore()
    await store.put_new_jobs([a_job()])

    with pytest.raises(IllegalTransition):
        await store.move_job(await store.get_job(RUN_ID, "00000-0"), "COMPLETED")

    assert (await store.get_job(RUN_ID, "00000-0")).version == 0


async def test_given_a_source_already_recorded_when_another_run_claims_it_then_the_first_runs_id_comes_back():
    store = FakeStore()
    await store.create_run(a_run())

    assert await store.create_run(a_run().model_copy(update={"run_id": "f" * 32})) == RUN_ID
    assert list(store.runs) == [RUN_ID]


async def test_given_a_full_slot_set_when_a_holder_asks_again_then_it_keeps_its_slot_and_newcomers_wait():
    store = FakeStore()
    assert await store.acquire_slot(HAIKU, "a", 1)

    assert (await store.acquire_slot(HAIKU, "a", 1), await store.acquire_slot(HAIKU, "b", 1)) == (True, False)


async def test_given_a_token_already_used_when_a_job_is_created_again_then_the_same_arn_and_no_new_job_come_back():
    bedrock = FakeBatchJobs()

    arns = {await bedrock.create(a_job()), await bedrock.create(a_job())}

    assert len(arns) == 1 and len(bedrock.jobs) == 1
