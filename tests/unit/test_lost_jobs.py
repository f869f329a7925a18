"""A job Bedrock stops listing is ended even when no other job of its model waits for a slot: the
watchdog's sweep reconciles the slots of every model a running job holds, and poll's next check
ends the job it marked. In-memory fakes of the ports."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from services.poll.handlers import check_job
from shared.domain.runs import now
from shared.errors import RetryableError
from shared.messages import CheckJob, CollectRun
from shared.settings import Settings
from shared.watchdog import sweep
from tests.unit.test_handlers import HAIKU, RUN_ID, a_job, a_run, given, stored_job

GRACE_S = 120


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(model_concurrency={"*": 2}, poll_interval_s=45, workdir=tmp_path / "work",
                    absent_job_grace_s=GRACE_S, stall_after_s=300)


async def a_running_job_alone(store, bedrock, *, listed: bool, absent_for: dt.timedelta | None = None) -> str:
    """The run's only job, RUNNING on Bedrock and holding a slot of its model; no job waits for one.
    `listed`: Bedrock lists it among the model's active jobs; `absent_for`: how long it has not."""
    job = a_job(status="RUNNING")
    arn = await bedrock.create(job)
    bedrock.set_state(arn, "InProgress")
    await given(store, a_run(), job.model_copy(update={"bedrock_arn": arn}))
    store.slots[HAIKU] = {job.name}
    bedrock.active[HAIKU] = [job.name] if listed else []
    if absent_for is not None:
        store.absent[HAIKU] = {job.name: now() - absent_for}
    return arn


async def check(store, queues, bedrock, settings) -> None:
    await check_job(CheckJob(run_id=RUN_ID, job_key="00000-0"), store=store, bedrock=bedrock, queues=queues,
                    settings=settings)


async def test_given_a_job_unlisted_past_the_grace_and_nothing_waiting_when_the_watchdog_sweeps_then_polls_next_check_ends_it(
        store, queues, bedrock, settings):
    arn = await a_running_job_alone(store, bedrock, listed=False, absent_for=dt.timedelta(seconds=GRACE_S + 5))

    done = await sweep(store=store, queues=queues, bedrock=bedrock, settings=settings)
    await check(store, queues, bedrock, settings)

    stored = await stored_job(store)
    assert done.lost == [stored.name]
    assert (stored.status, stored.bedrock_status) == ("FAILED", "NotListed")
    assert f"{GRACE_S} s grace" in stored.message
    assert bedrock.stopped == [arn], "Bedrock still answers for it, outside the model's count: stopped"
    assert store.slots[HAIKU] == set(), "its slot is free"
    assert [type(m) for m in queues.to("postprocess")] == [CollectRun], "collection salvages and retries it"


async def test_given_a_job_bedrock_just_stopped_listing_when_the_watchdog_sweeps_then_its_absence_is_timed_not_ended(
        store, queues, bedrock, settings):
    await a_running_job_alone(store, bedrock, listed=False)

    done = await sweep(store=store, queues=queues, bedrock=bedrock, settings=settings)
    await check(store, queues, bedrock, settings)

    stored = await stored_job(store)
    assert done.lost == [] and (stored.status, stored.absent_since) == ("RUNNING", None)
    assert (now() - store.absent[HAIKU][stored.name]).total_seconds() < 5, "its absence counts from this sweep"


async def test_given_a_job_bedrock_lists_again_when_the_watchdog_sweeps_then_its_absence_is_forgotten(
        store, queues, bedrock, settings):
    await a_running_job_alone(store, bedrock, listed=True, absent_for=dt.timedelta(seconds=GRACE_S - 5))

    done = await sweep(store=store, queues=queues, bedrock=bedrock, settings=settings)

    assert done.lost == [] and store.absent[HAIKU] == {}
    assert (await stored_job(store)).status == "RUNNING"


async def test_given_bedrock_cannot_be_listed_when_the_watchdog_sweeps_then_nothing_is_marked_and_the_sweep_goes_on(
        store, queues, bedrock, settings):
    await a_running_job_alone(store, bedrock, listed=False, absent_for=dt.timedelta(seconds=GRACE_S + 5))
    bedrock.list_error = RetryableError("listing Bedrock jobs: Could not connect to the endpoint URL")

    done = await sweep(store=store, queues=queues, bedrock=bedrock, settings=settings)

    assert done.lost == [] and (await stored_job(store)).absent_since is None
