"""Waking the jobs that wait for a slot (issue 11): a job that gives its model's slot back sends its
run's waiting jobs a SubmitJob of their live admission loop, so a freed slot is taken at once and
not a poll interval later; a wake that races the delayed loop still makes one Bedrock job and leaves
one loop. In-memory fakes of the ports."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from services.poll.handlers import check_job, job_state_changed
from services.submit.families.batch_job import slot_wait_s
from services.submit.handlers import submit_job
from shared.domain.runs import job_name
from shared.errors import ConflictError, PermanentError
from shared.messages import CheckJob, SubmitJob
from shared.settings import Settings
from tests.unit.fakes import FakeBatchJobs, arn_for
from tests.unit.test_handlers import HAIKU, RUN_ID, a_job, a_run, bedrock_event, given, stored_job

# Longer than any test could wait: a job admitted in these tests was woken, not polled.
LONG_POLL_S = 600


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(model_concurrency={"*": 1}, poll_interval_s=LONG_POLL_S, stall_after_s=3600,
                    workdir=tmp_path / "work")


async def one_running_one_waiting(store, queues, bedrock, settings) -> str:
    """00000-0 holds the model's only slot on Bedrock; 00001-0 waits for it (its loop delayed a
    whole poll interval). The ARN of 00000-0."""
    await given(store, a_run(), a_job("00000-0"), a_job("00001-0"))
    for key in ("00000-0", "00001-0"):
        await submit_job(SubmitJob(run_id=RUN_ID, job_key=key), store=store, bedrock=bedrock, queues=queues,
                         settings=settings)
    assert (await stored_job(store, "00001-0")).status == "PENDING"
    assert [(m.job_key, m.seq, d) for w, m, d in queues.sent if w == "submit"] == [("00001-0", 1, LONG_POLL_S)]
    queues.sent.clear()
    return arn_for((await stored_job(store, "00000-0")).client_token)


def wakes(queues) -> list[tuple[str, int | None, int]]:
    return [(m.job_key, m.seq, d) for w, m, d in queues.sent if w == "submit" and m.wake]


async def deliver_to_submit(queues, store, bedrock, settings) -> None:
    """Submit handles every SubmitJob sent without delay (what SQS hands it now)."""
    now = [m for w, m, d in queues.sent if w == "submit" and d == 0]
    queues.sent.clear()
    for message in now:
        await submit_job(message, store=store, bedrock=bedrock, queues=queues, settings=settings)


async def test_given_a_job_waiting_for_the_only_slot_when_the_holder_ends_then_it_is_created_without_waiting_its_poll(
        store, queues, bedrock, settings):
    arn = await one_running_one_waiting(store, queues, bedrock, settings)
    bedrock.set_state(arn, "Completed", processed=100, succeeded=100)

    await check_job(CheckJob(run_id=RUN_ID, job_key="00000-0"), store=store, bedrock=bedrock, queues=queues,
                    settings=settings)
    await deliver_to_submit(queues, store, bedrock, settings)

    waited = await stored_job(store, "00001-0")
    assert (waited.status, waited.bedrock_arn) == ("SUBMITTED", arn_for(waited.client_token))
    assert await store.slot_holders(HAIKU) == {waited.name}


async def test_given_a_job_waiting_for_a_slot_when_bedrocks_event_ends_the_holder_then_the_wake_carries_its_live_seq(
        store, queues, bedrock, settings):
    arn = await one_running_one_waiting(store, queues, bedrock, settings)
    bedrock.set_state(arn, "Failed", message="boom")

    await job_state_changed(bedrock_event(job_name(RUN_ID, "00000-0"), arn, "Failed"), store=store, bedrock=bedrock,
                            queues=queues, settings=settings)

    assert wakes(queues) == [("00001-0", 1, 0)]


async def test_given_several_free_slots_when_a_job_ends_then_as_many_waiting_jobs_are_woken_earliest_first(
        store, queues, bedrock, tmp_path):
    settings = Settings(model_concurrency={"*": 2}, poll_interval_s=LONG_POLL_S, workdir=tmp_path / "work")
    running = a_job("00000-0", status="RUNNING", bedrock_arn="arn:running")
    throttled = a_job("00001-0", throttles=2, submit_seq=3)  # backing off Bedrock, not waiting for a slot
    await given(store, a_run(), running, throttled, a_job("00003-0", submit_seq=4), a_job("00002-0", submit_seq=5),
                a_job("00004-0", submit_seq=1), a_job("00000-1", submit_seq=1))
    store.slots[HAIKU] = {running.name}  # the other slot was freed by a job of another run
    bedrock.set_state("arn:running", "Completed", processed=100, succeeded=100, name=running.name)

    await check_job(CheckJob(run_id=RUN_ID, job_key="00000-0"), store=store, bedrock=bedrock, queues=queues,
                    settings=settings)

    assert wakes(queues) == [("00002-0", 5, 0), ("00003-0", 4, 0)]


async def test_given_no_job_waits_when_a_job_ends_then_only_its_collection_is_asked_for(store, queues, bedrock,
                                                                                        settings):
    arn = await one_running_one_waiting(store, queues, bedrock, settings)
    await store.move_job(await stored_job(store, "00001-0"), "CANCELLED")
    bedrock.set_state(arn, "Completed", processed=100, succeeded=100)

    await check_job(CheckJob(run_id=RUN_ID, job_key="00000-0"), store=store, bedrock=bedrock, queues=queues,
                    settings=settings)

    assert wakes(queues) == []


async def test_given_bedrock_rejects_a_create_when_the_job_fails_then_the_job_waiting_for_its_slot_is_woken(
        store, queues, settings):
    class RejectsTheFirst(FakeBatchJobs):
        async def create(self, job):
            if job.job_key == "00000-0":
                raise PermanentError("ValidationException: the input is not valid")
            return await super().create(job)

    bedrock = RejectsTheFirst()
    await given(store, a_run(), a_job("00000-0"), a_job("00001-0", submit_seq=2))

    await submit_job(SubmitJob(run_id=RUN_ID, job_key="00000-0"), store=store, bedrock=bedrock, queues=queues,
                     settings=settings)

    assert wakes(queues) == [("00001-0", 2, 0)]


@pytest.mark.parametrize("wake_first", [True, False], ids=["wake-first", "loop-first"])
async def test_given_a_wake_racing_the_jobs_delayed_loop_when_both_arrive_then_one_bedrock_job_and_one_loop(
        store, queues, settings, wake_first):
    class BothReadBeforeEitherAdmits(FakeBatchJobs):
        async def active_job_names(self, model_id):
            await asyncio.sleep(0)  # both handlers have read the job PENDING before either admits it
            return await super().active_job_names(model_id)

    bedrock = BothReadBeforeEitherAdmits()
    await given(store, a_run(), a_job("00001-0", submit_seq=1))
    wake = SubmitJob(run_id=RUN_ID, job_key="00001-0", seq=1, wake=True)
    loop = SubmitJob(run_id=RUN_ID, job_key="00001-0", seq=1)
    first, second = (wake, loop) if wake_first else (loop, wake)

    outcomes = await asyncio.gather(*(submit_job(m, store=store, bedrock=bedrock, queues=queues, settings=settings)
                                      for m in (first, second)), return_exceptions=True)
    # The consumer redelivers the message that lost the race (ConflictError); it re-reads the job.
    assert [type(outcome) for outcome in outcomes] == [type(None), ConflictError]
    await submit_job(second, store=store, bedrock=bedrock, queues=queues, settings=settings)

    job = await stored_job(store, "00001-0")
    assert (job.status, job.submit_seq) == ("SUBMITTED", 1)
    assert list(bedrock.jobs) == [job.bedrock_arn], "exactly one Bedrock job"
    assert [w for w, *_ in queues.sent] == ["poll"] * len(queues.sent), "no second admission loop"
    assert {(m.job_key, m.seq) for m in queues.to("poll")} == {("00001-0", job.check_seq)}, "one check loop"


async def test_given_a_wake_and_the_loop_both_finding_no_slot_when_both_arrive_then_one_loop_goes_on(
        store, queues, settings):
    class BothReadBeforeEitherWaits(FakeBatchJobs):
        async def active_job_names(self, model_id):
            await asyncio.sleep(0)
            return await super().active_job_names(model_id)

    bedrock = BothReadBeforeEitherWaits()
    await given(store, a_run(), a_job("00001-0", submit_seq=1))
    store.slots[HAIKU] = {"quarry-ffffffffffffffffffffffffffffffff-00000-0"}  # another run took the slot first
    messages = [SubmitJob(run_id=RUN_ID, job_key="00001-0", seq=1, wake=True),
                SubmitJob(run_id=RUN_ID, job_key="00001-0", seq=1)]

    outcomes = await asyncio.gather(*(submit_job(m, store=store, bedrock=bedrock, queues=queues, settings=settings)
                                      for m in messages), return_exceptions=True)
    for message, outcome in zip(messages, outcomes):
        if isinstance(outcome, ConflictError):  # redelivered: its seq is stale now, so it is dropped
            await submit_job(message, store=store, bedrock=bedrock, queues=queues, settings=settings)

    assert (await stored_job(store, "00001-0")).submit_seq == 2
    assert [(m.seq, m.wake) for m in queues.to("submit")] == [(2, False)], "one admission loop, not two"
    assert bedrock.tokens_sent == []


async def test_given_a_job_admitted_already_when_a_late_wake_arrives_then_it_is_dropped(store, queues, bedrock,
                                                                                        settings):
    await given(store, a_run(), a_job("00001-0", submit_seq=1))
    await submit_job(SubmitJob(run_id=RUN_ID, job_key="00001-0", seq=1), store=store, bedrock=bedrock, queues=queues,
                     settings=settings)
    queues.sent.clear()

    await submit_job(SubmitJob(run_id=RUN_ID, job_key="00001-0", seq=1, wake=True), store=store, bedrock=bedrock,
                     queues=queues, settings=settings)

    assert queues.sent == [] and len(bedrock.tokens_sent) == 1, "no second create, no second check loop"


def test_given_a_job_that_keeps_waiting_when_it_waits_again_then_it_looks_less_often_up_to_four_poll_intervals(
        tmp_path):
    settings = Settings(poll_interval_s=60, stall_after_s=600, workdir=tmp_path / "work")

    assert [slot_wait_s(a_job(submit_seq=seq), settings) for seq in range(5)] == [60, 120, 240, 240, 240]


def test_given_a_short_stall_limit_when_a_job_waits_then_its_wait_stays_under_half_of_it(tmp_path):
    settings = Settings(poll_interval_s=60, stall_after_s=300, workdir=tmp_path / "work")

    assert [slot_wait_s(a_job(submit_seq=seq), settings) for seq in range(3)] == [60, 120, 150]
