"""RunStore and Queues on a real moto server: conditional writes, de-duplication, slots, delays."""
from __future__ import annotations

import pytest

from shared.adapters.aws import async_clients
from shared.adapters.queues import Queues
from shared.adapters.store import RunStore
from shared.domain.runs import IllegalTransition, Job, Run
from shared.domain.spec import RunSpec
from shared.errors import ConflictError
from shared.messages import SubmitJob, SUBMIT_INBOX, new_id
from shared.settings import Settings

SPEC = RunSpec(model_id="anthropic.claude-3-haiku-20240307-v1:0", template="{{ text }}")


def a_run(source_key: str | None = None) -> Run:
    return Run(run_id=new_id(), spec=SPEC, input_uri="s3://quarry-inputs/incoming/x.csv", origin="cli",
               source_key=source_key or new_id())


def a_job(run_id: str, index: int = 0) -> Job:
    return Job(run_id=run_id, job_key=f"{index:05d}-0", index=index, model_id=SPEC.model_id,
               chunk_uri=f"s3://quarry-work/runs/{run_id}/input/chunk-{index:05d}.jsonl",
               output_uri=f"s3://quarry-work/runs/{run_id}/output/", records=100, bytes=1000, first_row=0, end_row=100)


@pytest.fixture
async def store(moto_env):
    settings = Settings()
    async with async_clients(settings, "dynamodb") as aws:
        yield RunStore(aws["dynamodb"], settings.table)


async def test_the_same_source_never_makes_two_runs(store):
    first, second = a_run("s3://b/k#etag1"), a_run("s3://b/k#etag1")

    assert await store.create_run(first) == first.run_id
    assert await store.create_run(second) == first.run_id
    assert await store.get_run(second.run_id) is None


async def test_a_stale_write_loses_with_a_conflict(store):
    run = a_run()
    await store.create_run(run)
    moved = await store.move_run(run, "RUNNING", total_rows=5)

    with pytest.raises(ConflictError):
        await store.move_run(run, "FAILED")  # `run` is the version before `moved`

    assert (await store.get_run(run.run_id)).status == "RUNNING" == moved.status


async def test_an_illegal_move_is_refused_before_writing(store):
    run = a_run()
    await store.create_run(run)

    with pytest.raises(IllegalTransition):
        await store.move_run(run, "SUCCEEDED")


async def test_jobs_are_recorded_once_and_listed(store):
    run = a_run()
    await store.create_run(run)
    jobs = [a_job(run.run_id, i) for i in range(3)]
    await store.put_new_jobs(jobs)
    moved = await store.move_job(jobs[0], "SUBMITTING")

    await store.put_new_jobs(jobs)  # a redelivery must not reset job 0

    listed = await store.list_jobs(run.run_id)
    assert [job.job_key for job in listed] == ["00000-0", "00001-0", "00002-0"]
    assert listed[0].status == "SUBMITTING" and listed[0].version == moved.version


async def test_slots_stop_at_the_limit_and_come_back_when_released(store):
    model = f"test.model-{new_id()[:8]}"

    taken = [await store.acquire_slot(model, f"job-{i}", limit=2) for i in range(3)]
    again = await store.acquire_slot(model, "job-0", limit=2)
    await store.release_slot(model, "job-1")
    await store.release_slot(model, "job-1")  # releasing twice is harmless
    after_release = await store.acquire_slot(model, "job-2", limit=2)

    assert taken == [True, True, False] and again is True and after_release is True
    assert await store.slot_holders(model) == {"job-0", "job-2"}


async def test_recent_runs_are_listed_newest_first(store):
    runs = [a_run() for _ in range(3)]
    for run in runs:
        await store.create_run(run)

    listed = [run.run_id for run in await store.list_runs(limit=50)]

    assert listed.index(runs[2].run_id) < listed.index(runs[1].run_id) < listed.index(runs[0].run_id)


async def test_a_message_sent_to_a_worker_queue_arrives_as_it_was_sent(moto_env):
    settings = Settings()
    message = SubmitJob(run_id=new_id(), job_key="00007-0")
    async with async_clients(settings, "sqs") as aws:
        queues = Queues(aws["sqs"], settings)
        await queues.send("submit", message)
        received = await aws["sqs"].receive_message(QueueUrl=await queues.url("submit"), WaitTimeSeconds=2)

    assert SUBMIT_INBOX.validate_json(received["Messages"][0]["Body"]) == message


def test_a_small_read_refuses_an_object_over_its_limit(moto_env):
    import boto3

    from shared.adapters.objects import SyncObjects
    from shared.errors import PermanentError

    s3 = boto3.client("s3")
    s3.put_object(Bucket="quarry-inputs", Key="incoming/qa/big.csv.spec.json", Body=b"x" * 2048)
    objects = SyncObjects(s3)

    with pytest.raises(PermanentError, match="over 1,024 bytes"):
        objects.read_small("s3://quarry-inputs/incoming/qa/big.csv.spec.json", limit=1024)
    assert objects.read_small("s3://quarry-inputs/incoming/qa/missing.spec.json") is None


# --- rolling deploys: an older worker's write keeps what a newer one added ------------------------------
async def _add_as_a_newer_worker(store: RunStore, sk: str, run_id: str, field: str) -> None:
    """What a newer worker wrote: an attribute of the item, and a field of its document."""
    db, table = store._db, store._table
    key = {"pk": {"S": f"RUN#{run_id}"}, "sk": {"S": sk}}
    item = (await db.get_item(TableName=table, Key=key, ConsistentRead=True))["Item"]
    doc = item["doc"]["S"][:-1] + f', "{field}": {{"from": "v2"}}}}'
    await db.update_item(TableName=table, Key=key, UpdateExpression="SET doc = :doc, #new = :new",
                         ExpressionAttributeNames={"#new": f"{field}_attr"},
                         ExpressionAttributeValues={":doc": {"S": doc}, ":new": {"S": "v2"}})


async def _raw(store: RunStore, sk: str, run_id: str) -> dict:
    key = {"pk": {"S": f"RUN#{run_id}"}, "sk": {"S": sk}}
    return (await store._db.get_item(TableName=store._table, Key=key, ConsistentRead=True))["Item"]


async def test_a_run_written_back_by_an_older_worker_keeps_the_attributes_and_fields_it_does_not_know(store):
    run = a_run()
    await store.create_run(run)
    await _add_as_a_newer_worker(store, "RUN", run.run_id, "added_in_v9")

    read = await store.get_run(run.run_id)
    await store.move_run(read, "RUNNING", total_rows=5)

    item = await _raw(store, "RUN", run.run_id)
    assert item["added_in_v9_attr"] == {"S": "v2"}
    again = await store.get_run(run.run_id)
    assert (again.status, again.total_rows, again.model_extra) == ("RUNNING", 5, {"added_in_v9": {"from": "v2"}})


async def test_a_job_written_back_and_admitted_by_an_older_worker_keeps_what_it_does_not_know(store):
    run = a_run()
    await store.create_run(run)
    await store.put_new_jobs([a_job(run.run_id)])
    await _add_as_a_newer_worker(store, "JOB#00000-0", run.run_id, "added_in_v9")

    job = await store.get_job(run.run_id, "00000-0")
    job = await store.admit_job(job, limit=5)
    await store.move_job(job, "SUBMITTED", bedrock_arn="arn:job")

    item = await _raw(store, "JOB#00000-0", run.run_id)
    assert item["added_in_v9_attr"] == {"S": "v2"}
    again = await store.get_job(run.run_id, "00000-0")
    assert (again.status, again.model_extra) == ("SUBMITTED", {"added_in_v9": {"from": "v2"}})


async def test_absent_slot_holders_are_kept_beside_the_holders_and_cleared_without_touching_them(store):
    import datetime as dt

    model, since = f"model-{new_id()[:8]}", dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    assert await store.acquire_slot(model, "quarry-a", 2)

    await store.mark_absent(model, {"quarry-a": since})
    assert await store.slot_state(model) == ({"quarry-a"}, {"quarry-a": since})

    await store.mark_absent(model, {})
    assert await store.slot_state(model) == ({"quarry-a"}, {})
