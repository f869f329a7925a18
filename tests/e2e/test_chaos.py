"""Chaos: multi-job runs on the local stack while workers are killed (kill -9) at random moments
and started again. Proves every row exactly once, no duplicate Bedrock job, no slot left held and
exactly one email per run.

The suite's version is short (one run, a few kills); `make chaos` runs the long one:
QUARRY_CHAOS_RUNS, QUARRY_CHAOS_ROWS and QUARRY_CHAOS_SEED tune it.
"""
from __future__ import annotations

import csv
import io
import os
import random
import time
import uuid

import pytest

from infra.local_stack.mailsink import read_mail
from infra.local_stack.stack import WORKERS
from tests.e2e.conftest import distinct_rows, latest_runs, load_run
from tests.e2e.recovery_stack import clients, recovery_stack

RUNS = int(os.environ.get("QUARRY_CHAOS_RUNS", "1"))
ROWS = int(os.environ.get("QUARRY_CHAOS_ROWS", "600"))
SEED = int(os.environ.get("QUARRY_CHAOS_SEED", str(random.randrange(1 << 30))))


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    # Small jobs, so one run is several jobs, and a per-model limit below the job count, so slots
    # are contended while workers die.
    yield from recovery_stack(tmp_path_factory, QUARRY_MAX_RECORDS_PER_JOB="150",
                              QUARRY_MODEL_CONCURRENCY='{"*": 2}')


def _inputs(rows: int) -> bytes:
    return distinct_rows(rows)


def test_workers_killed_at_random_lose_and_duplicate_nothing(stack):
    aws = clients()
    chaos = random.Random(SEED)
    uris = []
    for n in range(RUNS):
        key = f"incoming/summarize/chaos-{n}-{uuid.uuid4().hex[:6]}.jsonl"
        aws["s3"].put_object(Bucket="quarry-inputs", Key=key, Body=_inputs(ROWS))
        uris.append(f"s3://quarry-inputs/{key}")

    kills = []
    deadline = time.monotonic() + 120 + 60 * RUNS
    while time.monotonic() < deadline:
        runs = {run.input_uri: run for run in latest_runs() if run.input_uri in uris}
        if len(runs) == len(uris) and all(run.settled for run in runs.values()):
            break
        time.sleep(chaos.uniform(0.5, 3.0))
        victim = chaos.choice(WORKERS)
        stack.kill_worker(victim)
        kills.append(victim)
        time.sleep(chaos.uniform(0, 1.5))  # dead for a while: its messages wait or are redelivered
        stack.restart_worker(victim)
    else:
        raise AssertionError(f"runs did not all finish (seed {SEED}, kills {kills}): "
                             f"{[(r.run_id, r.status, r.stalled) for r in latest_runs() if r.input_uri in uris]}")

    time.sleep(3)  # a duplicate email, if one were coming, comes now
    mail = read_mail(stack.config.maildir)
    for uri in uris:
        run = runs[uri]
        context = f"seed {SEED}, kills {kills}, run {run.run_id}"
        assert run.status == "SUCCEEDED", (context, run.error)
        body = aws["s3"].get_object(Bucket="quarry-results", Key=run.result_uri.split("/", 3)[3])["Body"].read()
        record_ids = [row["record_id"] for row in csv.DictReader(io.StringIO(body.decode()))]
        assert record_ids == [f"{i:010d}" for i in range(ROWS)], f"every row exactly once ({context})"
        _, jobs, holders = load_run(run.run_id)
        assert len(jobs) >= 4 and holders == set(), f"no slot left held ({context})"
        made = [s["jobName"] for s in aws["bedrock"].list_model_invocation_jobs(
            nameContains=run.run_id, maxResults=1000)["invocationJobSummaries"]]
        assert sorted(made) == sorted(job.name for job in jobs if job.bedrock_arn), f"no duplicate job ({context})"
        assert len([m for m in mail if run.run_id in m["body"]]) == 1, f"exactly one email ({context})"
    assert kills, "the chaos killed nothing: the run was too quick to test anything"
    print(f"chaos seed {SEED}: {len(uris)} run(s), {ROWS} rows each, killed {kills}")
