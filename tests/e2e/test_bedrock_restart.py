"""The local Bedrock killed (kill -9) in the middle of a multi-job run and started again: with its
home it resumes its jobs and the run succeeds whole; without it (it forgot every job) the run still
ends, by salvage and retry or a clear failure, with one email and no slot held. Never a hang."""
from __future__ import annotations

import csv
import io
import time
import uuid

import pytest

from infra.local_stack.mailsink import read_mail
from tests.e2e.conftest import distinct_rows, finished_run, load_run, run_for, wait_until
from tests.e2e.recovery_stack import clients, recovery_stack

ROWS = 600


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    # Jobs of 150 rows at 20 ms a row take seconds each, so the restart finds jobs InProgress; a
    # per-model limit below the job count keeps jobs waiting for slots across the restart. The
    # absent-job grace is short so a job Bedrock stopped listing ends within the test; the stall
    # limit is longer than the outage, which is Bedrock's, not a dead worker's.
    yield from recovery_stack(tmp_path_factory, QUARRY_MAX_RECORDS_PER_JOB="150",
                              QUARRY_MODEL_CONCURRENCY='{"*": 2}', QUARRY_ABSENT_JOB_GRACE_S="5",
                              QUARRY_STALL_AFTER_S="30", LOCAL_BEDROCK_DELAY_PER_RECORD="0.02")


@pytest.fixture(scope="module")
def aws(stack):
    return clients()


def _inputs(rows: int) -> bytes:
    return distinct_rows(rows)


def _start_run(aws, name: str) -> str:
    key = f"incoming/summarize/{name}-{uuid.uuid4().hex[:6]}.jsonl"
    aws["s3"].put_object(Bucket="quarry-inputs", Key=key, Body=_inputs(ROWS))
    uri = f"s3://quarry-inputs/{key}"
    wait_until(lambda: (run := run_for(uri)) is not None
               and any(job.bedrock_status == "InProgress" for job in load_run(run.run_id)[1]),
               timeout=60, what="a job of the run InProgress on Bedrock")
    return uri


def _outage(stack, *, forget: bool) -> float:
    """kill -9 the local Bedrock, keep it down until the workers' calls to it have failed three
    times (as many as the recovery stack lets a run's messages crash), start it again; seconds down."""
    logs = [stack.logs / f"{worker}.log" for worker in ("submit", "poll")]
    sizes = [log.stat().st_size for log in logs]
    stack.kill_bedrock()
    down = time.monotonic()

    def failed_calls() -> int:
        return sum(log.read_bytes()[size:].count(b"Could not connect to the endpoint URL")
                   for log, size in zip(logs, sizes))
    wait_until(lambda: failed_calls() >= 3, timeout=60, what="the workers' calls to Bedrock failing")
    stack.start_bedrock(forget=forget)
    return time.monotonic() - down


def _one_email_no_slot(stack, run) -> None:
    _, _, holders = load_run(run.run_id)
    assert holders == set(), "no slot is left held"
    time.sleep(2)  # a second email, if one were coming, would come in this time
    assert len([m for m in read_mail(stack.config.maildir) if run.run_id in m["body"]]) == 1, "exactly one email"


def test_a_bedrock_restarted_with_its_state_resumes_its_jobs_and_the_run_succeeds_whole(stack, aws):
    uri = _start_run(aws, "restart")

    down_s = _outage(stack, forget=False)
    started = time.monotonic()
    run = finished_run(uri, timeout=120)

    assert run.status == "SUCCEEDED", (run.status, run.error)
    body = aws["s3"].get_object(Bucket="quarry-results", Key=run.result_uri.split("/", 3)[3])["Body"].read().decode()
    assert [row["record_id"] for row in csv.DictReader(io.StringIO(body))] == [f"{i:010d}" for i in range(ROWS)]
    _, jobs, _ = load_run(run.run_id)
    made = [s["jobName"] for s in aws["bedrock"].list_model_invocation_jobs(
        nameContains=run.run_id, maxResults=1000)["invocationJobSummaries"]]
    assert sorted(made) == sorted(job.name for job in jobs if job.bedrock_arn), "one Bedrock job per job, no more"
    assert all(job.attempt == 0 for job in jobs), "resumed, not retried"
    _one_email_no_slot(stack, run)
    print(f"restart with state: down {down_s:.1f} s, run {run.status} {time.monotonic() - started:.1f} s after")


def test_a_bedrock_that_forgot_its_jobs_ends_the_run_within_bounded_time(stack, aws):
    uri = _start_run(aws, "forgot")

    down_s = _outage(stack, forget=True)
    started = time.monotonic()
    run = finished_run(uri, timeout=120)

    assert run.status in ("SUCCEEDED", "PARTIAL", "FAILED"), run.status
    _, jobs, _ = load_run(run.run_id)
    lost = [job for job in jobs if job.bedrock_status in ("NotFound", "NotListed")]
    assert lost, "the jobs Bedrock forgot ended as lost"
    if run.status == "SUCCEEDED":  # salvaged and retried: still every row once
        body = aws["s3"].get_object(Bucket="quarry-results",
                                    Key=run.result_uri.split("/", 3)[3])["Body"].read().decode()
        assert [row["record_id"] for row in csv.DictReader(io.StringIO(body))] == [f"{i:010d}" for i in range(ROWS)]
    else:
        assert run.error, "a failure says why"
    _one_email_no_slot(stack, run)
    print(f"restart without state: down {down_s:.1f} s, run {run.status} {time.monotonic() - started:.1f} s after, "
          f"lost jobs {[(job.job_key, job.bedrock_status) for job in lost]}, "
          f"retries {sum(job.attempt > 0 for job in jobs)}")
