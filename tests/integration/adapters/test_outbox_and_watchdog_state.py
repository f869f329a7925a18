"""RunStore's units of change on a real moto server: a change and its messages in one transaction,
slots that move with their jobs, what the watchdog reads (active runs, leftovers, failures)."""
from __future__ import annotations

import datetime as dt

import pytest

from shared.adapters.aws import async_clients
from shared.adapters.queues import Outgoing, Queues, deliver
from shared.adapters.store import RunStore, UnreadableRun
from shared.domain.runs import Job, Run, now
from shared.domain.spec import RunSpec
from shared.errors import ConflictError
from shared.messages import CollectRun, RunFinished, SubmitJob, new_id
from shared.settings import Settings

SPEC = RunSpec(model_id="anthropic.claude-3-haiku-20240307-v1:0", template="{{ text }}")
LATER = dt.timedelta(seconds=5)


def a_run() -> Run:
    return Run(run_id=new_id(), spec=SPEC, input_uri="s3://quarry-inputs/incoming/x.csv", origin="cli",
               source_key=new_id())


def a_job(run_id: str, model_id: str, index: int = 0) -> Job:
    return Job(run_id=run_id, job_key=f"{index:05d}-0", index=index, model_id=model_id,
               chunk_uri=f"s3://quarry-work/runs/{run_id}/input/chunk-{index:05d}.jsonl",
               output_uri=f"s3://quarry-work/runs/{run_id}/output/", records=100, bytes=1000, first_row=0, end_row=100)


@pytest.fixture
async def aws(moto_env):
    async with async_clients(Settings(), "dynamodb", "sqs") as clients:
        yield clients


@pytest.fixture
def store(aws) -> RunStore:
    return RunStore(aws["dynamodb"], Settings().table)


async def leftovers(store: RunStore, run_id: str) -> list[str]:
    return [u.body for u in await store.unsent(now() + LATER, limit=1000) if u.run_id == run_id]


async def test_a_change_and_its_message_are_written_together_and_the_message_stays_until_sent(store, aws):
    run = a_run()
    await store.create_run(run)
    sent = [Outgoing("notify", RunFinished(run_id=run.run_id, outcome="FAILED"))]

    await store.move_run(run, "FAILED", error="boom", send=sent)

    assert (await store.get_run(run.run_id)).status == "FAILED"
    assert [RunFinished.model_validate_json(body).outcome for body in await leftovers(store, run.run_id)] == ["FAILED"]
    await deliver(sent, queues=Queues(aws["sqs"], Settings()), store=store)
    assert await leftovers(store, run.run_id) == []


async def test_a_stale_change_writes_neither_the_change_nor_its_message(store):
    run = a_run()
    await store.create_run(run)
    await store.move_run(run, "RUNNING")

    with pytest.raises(ConflictError):
        await store.move_run(run, "FAILED", send=[Outgoing("notify", RunFinished(run_id=run.run_id, outcome="FAILED"))])

    assert await leftovers(store, run.run_id) == []


async def test_more_messages_than_one_transaction_holds_are_all_kept(store):
    run = a_run()
    await store.create_run(run)
    sent = [Outgoing("submit", SubmitJob(run_id=run.run_id, job_key=f"{i:05d}-0")) for i in range(130)]

    await store.move_run(run, "RUNNING", send=sent)

    assert len(await leftovers(store, run.run_id)) == 130


async def test_new_jobs_and_their_messages_are_written_once(store):
    run = a_run()
    jobs = [a_job(run.run_id, SPEC.model_id, i) for i in range(2)]
    sent = [Outgoing("submit", SubmitJob(run_id=run.run_id, job_key=j.job_key)) for j in jobs]

    assert await store.put_new_jobs(jobs, send=sent) is True
    assert await store.put_new_jobs(jobs, send=sent) is False

    assert len(await store.list_jobs(run.run_id)) == 2 and len(await leftovers(store, run.run_id)) == 2


async def test_a_job_takes_a_slot_as_it_is_admitted_and_gives_it_back_as_it_ends(store):
    model = f"test.model-{new_id()[:8]}"
    run = a_run()
    jobs = [a_job(run.run_id, model, i) for i in range(3)]
    await store.put_new_jobs(jobs)

    admitted = [await store.admit_job(job, limit=2) for job in jobs]

    assert [job is not None for job in admitted] == [True, True, False]
    assert (await store.get_job(run.run_id, "00002-0")).status == "PENDING"
    submitted = await store.move_job(admitted[0], "SUBMITTED", bedrock_arn="arn:x")
    assert await store.slot_holders(model) == {jobs[0].name, jobs[1].name}, "still active: still holding"
    await store.move_job(submitted, "COMPLETED",
                         send=[Outgoing("postprocess", CollectRun(run_id=run.run_id))])
    assert await store.slot_holders(model) == {jobs[1].name}
    assert await store.admit_job(jobs[2], limit=2) is not None


async def test_active_runs_leave_out_settled_ones(store):
    since = now() - LATER
    open_run, settled = a_run(), a_run()
    for run in (open_run, settled):
        await store.create_run(run)
    failed = await store.move_run(settled, "FAILED")
    await store.update_run(failed, notified_at=now())

    active = {run.run_id for run in await store.active_runs(since)}

    assert open_run.run_id in active and settled.run_id not in active


async def test_one_corrupt_run_item_does_not_hide_the_other_runs(store, aws):
    good, bad = a_run(), a_run()
    for run in (good, bad):
        await store.create_run(run)
    await aws["dynamodb"].update_item(TableName=Settings().table, Key={"pk": {"S": f"RUN#{bad.run_id}"}, "sk": {"S": "RUN"}},
                                      UpdateExpression="SET doc = :d", ExpressionAttributeValues={":d": {"S": "{not json"}})
    unreadable: list[UnreadableRun] = []

    listed = {run.run_id for run in await store.list_runs(limit=100, unreadable=unreadable)}

    assert good.run_id in listed and bad.run_id not in listed
    assert [item.run_id for item in unreadable] == [bad.run_id]


async def test_failures_are_counted_per_run_and_keep_the_last_reason(store):
    run_id = new_id()
    await store.record_failure(run_id, "first")
    await store.record_failure(run_id, "rows.parquet is corrupt", fatal=True)

    assert await store.failures(run_id) == (2, "rows.parquet is corrupt", True)
    assert await store.failures(new_id()) == (0, None, False)


async def test_the_lease_is_held_by_one_holder_until_it_expires(store):
    name = f"test-{new_id()[:8]}"

    assert await store.take_lease(name, "a", 60) is True
    assert await store.take_lease(name, "b", 60) is False
    assert await store.take_lease(name, "a", 60) is True
    assert await store.take_lease(name, "a", -1) is True  # expired at once
    assert await store.take_lease(name, "b", 60) is True
