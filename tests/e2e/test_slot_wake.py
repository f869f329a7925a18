"""A job waiting for its model's slot is created the moment another job of its run ends (issue 11),
not at its next look a poll interval later: on the whole local stack, with workers polling every
30 s and one slot per model."""
from __future__ import annotations

import uuid

import boto3
import pytest

from tests.e2e.conftest import distinct_rows, finished_run, load_run, running_stack

POLL_S = 30


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    # Two jobs of 150 rows, one slot: the second waits for the first. At 80 ms a row the first runs
    # for 12 s, so the second has certainly found no slot and waits a whole POLL_S before it looks
    # again; Bedrock's event of the first's end reaches poll at once. (At 20 ms a row, 3 s, a loaded
    # CI machine once admitted the second only after the first had ended.)
    yield from running_stack(tmp_path_factory.mktemp("slot-wake-stack"), poll_interval_s=POLL_S,
                             worker_env={"QUARRY_MAX_RECORDS_PER_JOB": "150", "QUARRY_MODEL_CONCURRENCY": '{"*": 1}',
                                         "LOCAL_BEDROCK_DELAY_PER_RECORD": "0.08"})


def test_a_job_waiting_for_the_only_slot_is_created_right_after_the_first_ends_not_a_poll_interval_later(stack):
    s3, bedrock = boto3.client("s3"), boto3.client("bedrock")
    key = f"incoming/summarize/slot-wake-{uuid.uuid4().hex[:6]}.jsonl"
    s3.put_object(Bucket="quarry-inputs", Key=key, Body=distinct_rows(300))

    run = finished_run(f"s3://quarry-inputs/{key}", timeout=120)

    assert run.status == "SUCCEEDED", (run.status, run.error)
    _, jobs, holders = load_run(run.run_id)
    first, second = sorted(jobs, key=lambda job: job.index)
    assert second.submit_seq >= 1, "the second job found no slot and waited"
    made = {s["jobName"]: s for s in bedrock.list_model_invocation_jobs(
        nameContains=run.run_id, maxResults=100)["invocationJobSummaries"]}
    assert sorted(made) == sorted(job.name for job in jobs), "one Bedrock job per job, no more"
    gap = (made[second.name]["submitTime"] - made[first.name]["endTime"]).total_seconds()
    assert gap < POLL_S / 3, f"the second job was created {gap:.1f} s after the first ended (poll every {POLL_S} s)"
    assert holders == set()
    print(f"second job created {gap:.2f} s after the first ended")
