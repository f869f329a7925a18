"""Each crash window, reproduced exactly: a worker dies (os._exit(137), as kill -9) at a named
point (QUARRY_CRASH_AT), is started again without it, and the run still finishes with every row
once, one email and no slot held. And a run that can never finish fails with its error and an
email instead of hanging."""
from __future__ import annotations

import csv
import io
import time
import uuid

import pytest

from infra.local_stack.mailsink import read_mail
from tests.e2e.conftest import control, finished_run, load_run, run_for, sample, wait_until
from tests.e2e.recovery_stack import clients, recovery_stack

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    yield from recovery_stack(tmp_path_factory)


@pytest.fixture(scope="module")
def aws(stack):
    return clients()


def crash_once(stack, worker: str, point: str) -> None:
    """Restart `worker` so that it dies at `point`."""
    stack.restart_worker(worker, env={"QUARRY_CRASH_AT": point})


def wait_for_death_then_restart(stack, worker: str, point: str) -> None:
    log = stack.logs / f"{worker}.log"
    wait_until(lambda: f'"point": "{point}"' in log.read_text(errors="replace") and stack.worker_pid(worker) is None,
               timeout=90, what=f"{worker} to die at {point}")
    stack.restart_worker(worker)


def assert_whole(stack, aws, run, rows: int) -> None:
    assert run.status == "SUCCEEDED", (run.status, run.error)
    body = aws["s3"].get_object(Bucket="quarry-results", Key=run.result_uri.split("/", 3)[3])["Body"].read().decode()
    assert [row["record_id"] for row in csv.DictReader(io.StringIO(body))] == [f"{i:010d}" for i in range(rows)]
    _, jobs, holders = load_run(run.run_id)
    assert holders == set(), "no slot is left held"
    time.sleep(2)  # a second email, if one were coming, would come in this time
    assert len([m for m in read_mail(stack.config.maildir) if run.run_id in m["body"]]) == 1, "exactly one email"
    names = [j["jobName"] for j in aws["bedrock"].list_model_invocation_jobs(nameContains=run.run_id,
                                                                           maxResults=1000)["invocationJobSummaries"]]
    assert sorted(names) == sorted(job.name for job in jobs if job.bedrock_arn), "one Bedrock job per job, no more"


def drop(aws, rows: int, name: str) -> str:
    key = f"incoming/summarize/{name}-{uuid.uuid4().hex[:6]}.jsonl"
    aws["s3"].put_object(Bucket="quarry-inputs", Key=key, Body=sample(rows))
    return f"s3://quarry-inputs/{key}"


@pytest.mark.parametrize("worker, point", [
    ("preprocess", "preprocess.after_jobs_recorded"),
    ("postprocess", "postprocess.after_outcome_recorded"),
    ("notify", "notify.after_email_sent"),
])
def test_a_worker_killed_between_a_state_change_and_its_message_still_finishes_the_run(stack, aws, worker, point):
    crash_once(stack, worker, point)
    uri = drop(aws, 250, worker)

    wait_for_death_then_restart(stack, worker, point)
    run = finished_run(uri, timeout=120)

    assert_whole(stack, aws, run, 250)


def test_postprocess_killed_after_recording_retry_jobs_still_finishes_the_run(stack, aws):
    fault = control(stack, "POST", "/local-bedrock-api/faults", {
        "model_id": HAIKU, "outcome": "PartiallyCompleted", "after_fraction": 0.4, "times": 1})
    try:
        crash_once(stack, "postprocess", "postprocess.after_retry_jobs_recorded")
        uri = drop(aws, 300, "retry")
        wait_for_death_then_restart(stack, "postprocess", "postprocess.after_retry_jobs_recorded")
        run = finished_run(uri, timeout=120)
    finally:
        control(stack, "DELETE", f"/local-bedrock-api/faults/{fault['fault_id']}")

    assert_whole(stack, aws, run, 300)
    _, jobs, _ = load_run(run.run_id)
    assert sorted((job.attempt, job.status) for job in jobs) == [(0, "PARTIAL"), (1, "COMPLETED")]


def test_a_run_whose_collection_always_crashes_fails_with_the_error_and_an_email(stack, aws):
    # Collection waits while rows.parquet is spoiled: with postprocess down the run stays RUNNING
    # however soon its job ends (the fast engine ends 150 rows in under a second, before this
    # test's polling saw RUNNING once in two loaded runs).
    stack.kill_worker("postprocess")
    try:
        uri = drop(aws, 150, "corrupt")
        run = wait_until(lambda: (r := run_for(uri)) is not None and r.status == "RUNNING" and r, timeout=60,
                         what="a running run")
        aws["s3"].put_object(Bucket="quarry-work", Key=f"runs/{run.run_id}/rows.parquet", Body=b"not parquet at all")
    finally:
        stack.restart_worker("postprocess")

    run = finished_run(uri, timeout=300)  # the watchdog gives up after bounded re-drives; generous for a loaded CI

    assert run.status == "FAILED" and "Parquet" in run.error, run.error
    mail = wait_until(lambda: next((m for m in read_mail(stack.config.maildir) if run.run_id in m["body"]), None),
                      timeout=30, what="the failure email")
    assert "failed" in mail["subject"] and "Parquet" in mail["body"]
    _, _, holders = load_run(run.run_id)
    assert holders == set()


# --- customize: the hosting a crash must neither duplicate nor leave billing --------------------------------
def _customize_data(aws) -> dict:
    """Training rows and held-out rows asked differently (tests/e2e/test_customize.py explains why)."""
    from tests.e2e.test_customize import HELD_OUT, TRAIN, _put, _rows

    rows, tag = _rows(), uuid.uuid4().hex[:6]
    held = [{"prompt": r["prompt"].replace("Summarize the following conversation.", "Write a one-line summary of this "
                                           "conversation, please."), "completion": r["completion"]}
            for r in rows[:HELD_OUT]]
    return {"train": _put(aws["s3"], f"tuning/{tag}/train.jsonl", rows[:TRAIN]),
            "held_out": _put(aws["s3"], f"tuning/{tag}/held_out.jsonl", held), "tag": tag, "rows": rows}


@pytest.mark.parametrize("learns", [True, False], ids=["gate-passes", "gate-fails"])
def test_submit_killed_right_after_requesting_the_hosting_finds_it_again_and_keeps_or_deletes_it_per_the_gate(
        stack, aws, learns):
    from tests.e2e.test_customize import BASE, _drop, _finished, _hosting_left, _spec

    point = "submit.after_hosting_requested"
    data = _customize_data(aws)
    if not learns:
        control(stack, "POST", "/local-bedrock-api/faults", {"model_id": BASE, "job_name": "quarry-*-customization",
                                                              "learn_nothing": True, "times": 1})
    created_before = control(stack, "GET", "/local-bedrock-api/health")["hostingCreated"]["provisionedThroughputs"]
    crash_once(stack, "submit", point)
    source = _drop(aws, _spec(data, "crashed", hosting={"type": "provisioned", "model_units": 1}))

    wait_for_death_then_restart(stack, "submit", point)
    run = _finished(source, timeout=180)

    created = control(stack, "GET", "/local-bedrock-api/health")["hostingCreated"]["provisionedThroughputs"]
    assert created - created_before == 1, "one hosting ever created, the crash notwithstanding"
    left = _hosting_left(run.run_id)
    try:
        if learns:
            assert (run.status, run.summary["verdict"], run.summary["kept"]) == ("SUCCEEDED", "gate_passed", True)
            assert left == [run.summary["hosting"]["arn"]]
            assert aws["bedrock"].get_provisioned_model_throughput(provisionedModelId=left[0])["status"] == "InService"
        else:
            assert (run.status, run.summary["verdict"]) == ("SUCCEEDED", "gate_not_passed"), run.error
            assert left == [], "the hosting the crashed worker requested was deleted"
    finally:
        for arn in left:  # no-commitment throughput is limited per account: leave none to later tests
            aws["bedrock"].delete_provisioned_model_throughput(provisionedModelId=arn)
    time.sleep(2)  # a second email, if one were coming, would come in this time
    assert len([m for m in read_mail(stack.config.maildir) if run.run_id in m["body"]]) == 1, "exactly one email"


def test_an_orphan_hosting_whose_run_is_lost_is_deleted_by_the_sweeper_and_emailed_about_once(stack, aws):
    # As a crash between a hosting's create and its run's record would leave it: Quarry's name, no run.
    lost_run = uuid.uuid4().hex
    name = f"quarry-{lost_run}-hosting"
    bedrock = aws["bedrock"]
    orphan = bedrock.create_provisioned_model_throughput(provisionedModelName=name, modelUnits=1,
                                                         modelId="amazon.titan-text-lite-v1")["provisionedModelArn"]
    theirs = bedrock.create_provisioned_model_throughput(provisionedModelName=f"team-{lost_run[:8]}", modelUnits=1,
                                                         modelId="amazon.titan-text-lite-v1")["provisionedModelArn"]
    try:
        mail = wait_until(lambda: next((m for m in read_mail(stack.config.maildir) if orphan in m["body"]), None),
                          timeout=60, what="the sweeper's email")
        names = [p["provisionedModelName"] for p in bedrock.list_provisioned_model_throughputs()
                 ["provisionedModelSummaries"]]
    finally:
        bedrock.delete_provisioned_model_throughput(provisionedModelId=theirs)

    assert name not in names, "the orphan was deleted"
    assert f"team-{lost_run[:8]}" in names, "a throughput Quarry did not make is left alone"
    assert " ".join(mail["subject"].split()) == f"Quarry deleted hosting {name}"  # a long subject comes folded
    assert "its run is lost" in mail["body"]
    time.sleep(3)  # later sweeps find nothing more to delete, so no second email
    assert len([m for m in read_mail(stack.config.maildir) if orphan in m["body"]]) == 1
