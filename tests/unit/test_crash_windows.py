"""Crash windows, closed: a worker that dies between a state change and the message it implies
leaves that message in the outbox, and the watchdog sends it; runs that cannot go on fail with an
email; notify sends one email however often it is redelivered. In-memory fakes of the ports."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from services.notify.handlers import run_finished
from services.poll.handlers import check_job
from services.submit.handlers import submit_job
from services.postprocess.handlers import collect_run
from services.preprocess.handlers import start_run
from services.postprocess.collecting import plan_retries
from shared.domain.runs import now
from shared.errors import RetryableError
from shared.messages import CheckJob, CollectRun, RunFinished, SubmitJob
from shared.settings import Settings
from shared.watchdog import sweep
from tests.unit.fakes import FakeNotifier, FakeObjects, FakeRuntime, FakeStore, WorkerDied
from tests.unit.test_handlers import CSV, HAIKU, INPUT, RUN_ID, a_job, a_run, a_start, given, stored_job

LONG_AGO = dt.timedelta(hours=1)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(model_concurrency={"*": 2}, poll_interval_s=45, workdir=tmp_path / "work", min_records_per_job=2,
                    max_records_per_job=3, outbox_grace_s=0, stall_after_s=60, max_redrives=2, max_crashes=3)


async def watchdog(store, queues, bedrock, settings):
    return await sweep(store=store, queues=queues, bedrock=bedrock, settings=settings)


def age(store: FakeStore, by: dt.timedelta = LONG_AGO) -> None:
    """Let time pass: nothing was written to any run or job for `by`."""
    for key, run in store.runs.items():
        store.runs[key] = run.model_copy(update={"updated_at": run.updated_at - by})
    for key, job in store.jobs.items():
        store.jobs[key] = job.model_copy(update={"updated_at": job.updated_at - by})


# --- the outbox ------------------------------------------------------------------------------------------
async def test_given_preprocess_died_after_recording_jobs_when_the_watchdog_sweeps_then_their_submit_jobs_go_out(
        store, queues, bedrock, settings):
    queues.crash_on_send = True
    with pytest.raises(WorkerDied):
        await start_run(a_start(), store=store, queues=queues, objects=FakeObjects({INPUT: CSV}), runtime=FakeRuntime(),
                        settings=settings)
    jobs = await store.list_jobs(RUN_ID)
    assert jobs and queues.sent == []
    queues.crash_on_send = False

    await watchdog(store, queues, bedrock, settings)

    assert sorted(m.job_key for m in queues.to("submit")) == sorted(job.job_key for job in jobs)
    assert store.unsent_messages() == []


async def test_given_postprocess_died_after_recording_the_outcome_when_the_watchdog_sweeps_then_run_finished_goes_out(
        store, queues, bedrock, settings):
    await given(store, a_run("FINALIZING", total_rows=0))
    queues.crash_on_send = True
    with pytest.raises(WorkerDied):
        await collect_run(CollectRun(run_id=RUN_ID), store=store, queues=queues, runtime=FakeRuntime(),
                          objects=FakeObjects({f"s3://quarry-work/runs/{RUN_ID}/rows.parquet": _empty_rows()}),
                          settings=settings)
    assert store.runs[RUN_ID].status == "SUCCEEDED"
    queues.crash_on_send = False

    await watchdog(store, queues, bedrock, settings)

    assert [m.outcome for m in queues.to("notify")] == ["SUCCEEDED"]


def _empty_rows() -> bytes:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    out = io.BytesIO()
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), out)
    return out.getvalue()


async def test_given_a_job_ends_when_poll_dies_before_sending_collect_run_then_the_slot_is_free_and_it_still_goes_out(
        store, queues, bedrock, settings):
    job = a_job(status="SUBMITTED")
    arn = await bedrock.create(job)
    await given(store, a_run(), job.model_copy(update={"bedrock_arn": arn}))
    store.slots[HAIKU] = {job.name}
    bedrock.set_state(arn, "Completed", processed=100, succeeded=100)
    queues.crash_on_send = True
    with pytest.raises(WorkerDied):
        await check_job(CheckJob(run_id=RUN_ID, job_key="00000-0"), store=store, bedrock=bedrock, queues=queues,
                        settings=settings)
    assert await store.slot_holders(HAIKU) == set(), "the slot went back in the same write as the job's end"
    queues.crash_on_send = False

    await watchdog(store, queues, bedrock, settings)

    assert [type(m) for m in queues.to("postprocess")] == [CollectRun]


# --- stalls and poison runs ---------------------------------------------------------------------------------
async def test_given_a_pending_job_with_no_submit_job_alive_when_the_watchdog_sweeps_then_it_is_re_driven(
        store, queues, bedrock, settings):
    await given(store, a_run(), a_job(submit_seq=4))
    age(store)

    done = await watchdog(store, queues, bedrock, settings)

    assert [(m.job_key, m.seq) for m in queues.to("submit")] == [("00000-0", 4)]
    run = store.runs[RUN_ID]
    assert (run.redrives, run.stalled) == (1, done.redriven[RUN_ID]) and "00000-0 PENDING" in run.stalled


async def test_given_a_moving_run_when_the_watchdog_sweeps_then_nothing_is_sent(store, queues, bedrock, settings):
    await given(store, a_run(), a_job(submit_seq=4), a_job("00001-0", "RUNNING", bedrock_arn="arn:b"))

    await watchdog(store, queues, bedrock, settings)

    assert queues.sent == [] and store.runs[RUN_ID].version == 0


async def test_given_a_run_that_never_moves_when_re_driven_too_often_then_it_fails_with_an_email_and_says_why(
        store, queues, bedrock, settings):
    await given(store, a_run(redrives=2), a_job())
    age(store)

    await watchdog(store, queues, bedrock, settings)

    run = store.runs[RUN_ID]
    assert run.status == "FAILED" and "no progress after 2 re-drives" in run.error and "00000-0 PENDING" in run.error
    assert [m.outcome for m in queues.to("notify")] == ["FAILED"]
    assert (await stored_job(store)).status == "CANCELLED"


async def test_given_collection_always_crashes_when_the_watchdog_sweeps_then_the_run_fails_with_the_error(
        store, queues, bedrock, settings):
    await given(store, a_run("FINALIZING"), a_job("00000-0", "COMPLETED", bedrock_arn="arn:a"))
    for _ in range(3):
        await store.record_failure(RUN_ID, "postprocess: ArrowInvalid: Parquet magic bytes not found")

    await watchdog(store, queues, bedrock, settings)

    run = store.runs[RUN_ID]
    assert run.status == "FAILED" and "Parquet magic bytes not found" in run.error
    assert [m.outcome for m in queues.to("notify")] == ["FAILED"]


async def test_given_a_message_of_the_run_was_parked_when_the_watchdog_sweeps_then_the_run_fails_at_once(
        store, queues, bedrock, settings):
    await given(store, a_run(), a_job("00000-0", "RUNNING", bedrock_arn="arn:a"))
    await store.record_failure(RUN_ID, "submit: no job 00009-0", fatal=True)

    await watchdog(store, queues, bedrock, settings)

    assert store.runs[RUN_ID].status == "FAILED" and "dead-letter" in store.runs[RUN_ID].error
    assert bedrock.stopped == ["arn:a"], "its jobs are stopped, so their slots come back"


async def test_given_a_run_that_ended_but_was_never_notified_when_the_watchdog_sweeps_then_notify_is_re_driven(
        store, queues, bedrock, settings):
    await given(store, a_run("SUCCEEDED"))
    age(store)

    await watchdog(store, queues, bedrock, settings)

    assert [m.outcome for m in queues.to("notify")] == ["SUCCEEDED"]


async def test_given_a_job_bedrock_no_longer_knows_when_checked_then_it_fails_frees_its_slot_and_the_run_is_collected(
        store, queues, bedrock, settings):
    job = a_job(status="RUNNING")
    arn = await bedrock.create(job)
    await given(store, a_run(), job.model_copy(update={"bedrock_arn": arn}))
    store.slots[HAIKU] = {job.name}
    bedrock.forget(arn)  # the service restarted and lost its jobs

    await check_job(CheckJob(run_id=RUN_ID, job_key="00000-0"), store=store, bedrock=bedrock, queues=queues,
                    settings=settings)

    stored = await stored_job(store)
    assert stored.status == "FAILED" and "no longer knows" in stored.message
    assert await store.slot_holders(HAIKU) == set()
    assert [type(m) for m in queues.to("postprocess")] == [CollectRun]


async def a_lost_job(store, bedrock, *, absent_for: dt.timedelta | None, status: str = "InProgress") -> str:
    """A running job that holds one of the model's two slots and that Bedrock answers for but has not
    listed as active since `absent_for` ago (None: it is listed); a second job waits for a slot."""
    job = a_job(status="RUNNING")
    arn = await bedrock.create(job)
    bedrock.set_state(arn, status)
    await given(store, a_run(), job.model_copy(update={"bedrock_arn": arn}), a_job("00001-0"))
    store.slots[HAIKU] = {job.name, "quarry-" + "f" * 32 + "-00000-0"}  # the other slot: another run's
    bedrock.active[HAIKU] = ["quarry-" + "f" * 32 + "-00000-0"] + ([job.name] if absent_for is None else [])
    if absent_for is not None:
        store.absent[HAIKU] = {job.name: now() - absent_for}
    return arn


async def admit_and_check(store, queues, bedrock, settings) -> None:
    """The waiting job tries to get a slot (submit's reconciliation), then poll checks the lost job."""
    await submit_job(SubmitJob(run_id=RUN_ID, job_key="00001-0"), store=store, bedrock=bedrock, queues=queues,
                     settings=settings)
    await check_job(CheckJob(run_id=RUN_ID, job_key="00000-0"), store=store, bedrock=bedrock, queues=queues,
                    settings=settings)


async def test_given_a_job_bedrock_has_not_listed_past_the_grace_when_checked_then_it_fails_frees_its_slot_and_is_salvaged(
        store, queues, bedrock, settings):
    arn = await a_lost_job(store, bedrock, absent_for=dt.timedelta(seconds=settings.absent_job_grace_s + 5))

    await admit_and_check(store, queues, bedrock, settings)

    stored = await stored_job(store)
    assert (stored.status, stored.bedrock_status) == ("FAILED", "NotListed")
    assert "has not listed job" in stored.message and "ListModelInvocationJobs" in stored.message
    assert bedrock.stopped == [arn], "still running there, outside the model's count: stopped"
    assert stored.name not in await store.slot_holders(HAIKU)
    assert [type(m) for m in queues.to("postprocess")] == [CollectRun], "collection salvages and retries it"


async def test_given_a_job_bedrock_has_not_listed_for_less_than_the_grace_when_checked_then_it_goes_on(
        store, queues, bedrock, settings):
    await a_lost_job(store, bedrock, absent_for=dt.timedelta(seconds=settings.absent_job_grace_s - 60))

    await admit_and_check(store, queues, bedrock, settings)

    stored = await stored_job(store)
    assert (stored.status, stored.absent_since, bedrock.stopped) == ("RUNNING", None, [])
    assert stored.name in store.absent[HAIKU], "its absence is still being timed"


async def test_given_a_job_bedrock_first_misses_when_admission_looks_then_its_absence_starts_being_timed(
        store, queues, bedrock, settings):
    await a_lost_job(store, bedrock, absent_for=None)
    bedrock.active[HAIKU] = bedrock.active[HAIKU][:1]  # Bedrock stops listing it

    await admit_and_check(store, queues, bedrock, settings)

    assert (now() - store.absent[HAIKU][(await stored_job(store)).name]).total_seconds() < 5
    assert (await stored_job(store)).status == "RUNNING"


async def test_given_a_job_bedrock_lists_again_when_admission_looks_then_its_absence_is_forgotten(
        store, queues, bedrock, settings):
    await a_lost_job(store, bedrock, absent_for=dt.timedelta(seconds=60))
    bedrock.active[HAIKU].append((await stored_job(store)).name)

    await admit_and_check(store, queues, bedrock, settings)

    assert store.absent[HAIKU] == {} and (await stored_job(store)).status == "RUNNING"


async def test_given_an_absent_job_that_bedrock_says_completed_when_checked_then_it_completes_normally(
        store, queues, bedrock, settings):
    await a_lost_job(store, bedrock, absent_for=dt.timedelta(seconds=settings.absent_job_grace_s + 5),
                     status="Completed")

    await admit_and_check(store, queues, bedrock, settings)

    assert ((await stored_job(store)).status, bedrock.stopped) == ("COMPLETED", [])


async def test_given_a_job_bedrock_refused_to_create_when_retries_are_planned_then_it_is_not_retried(store, settings):
    rejected = a_job(status="FAILED", message="ValidationException: The provided model identifier is invalid.")

    plan = plan_retries(a_run(), [rejected], objects=FakeObjects(), settings=settings)

    assert (plan.jobs, plan.on_demand) == ([], {})


# --- notify: one email ---------------------------------------------------------------------------------------
async def test_given_notify_died_after_the_email_before_recording_it_when_redelivered_then_the_same_notice_id_is_used(
        store):
    notifier = FakeNotifier()
    await given(store, a_run("FAILED", error="boom"))
    event = RunFinished(run_id=RUN_ID, outcome="FAILED")
    notifier.event_error = WorkerDied("killed after the email")  # dies before anything is recorded
    with pytest.raises(WorkerDied):
        await run_finished(event, store=store, notifier=notifier)
    notifier.event_error = None

    await run_finished(event, store=store, notifier=notifier)

    assert len(notifier.emails) == 1, "the email was recorded as sent before the event: not sent again"
    assert store.runs[RUN_ID].notified_at is not None


async def test_given_another_notify_is_sending_when_a_copy_of_run_finished_arrives_then_it_waits_and_sends_nothing(
        store):
    notifier = FakeNotifier()
    await given(store, a_run("FAILED", error="boom", notifying_at=now(), notification_id="n-1"))

    with pytest.raises(RetryableError):
        await run_finished(RunFinished(run_id=RUN_ID, outcome="FAILED"), store=store, notifier=notifier)

    assert notifier.emails == []


async def test_given_a_notify_died_holding_its_claim_when_redelivered_then_it_sends_with_the_same_notice_id(store):
    notifier = FakeNotifier()
    await given(store, a_run("FAILED", error="boom"))
    event = RunFinished(run_id=RUN_ID, outcome="FAILED")
    await run_finished(event, store=store, notifier=notifier)
    first_id = notifier.notification_ids[0]
    run = store.runs[RUN_ID]
    store.runs[RUN_ID] = run.model_copy(update={"notified_at": None, "emailed_at": None,
                                                "notifying_at": now() - LONG_AGO})

    await run_finished(event, store=store, notifier=notifier)

    assert notifier.notification_ids == [first_id, first_id], "subscribers drop the copy by its id"


async def test_given_eventbridge_rejects_an_entry_when_the_event_is_published_then_it_is_retried_not_parked():
    from shared.adapters.notifications import Notifier

    class PartialFailure:
        async def put_events(self, Entries):
            return {"FailedEntryCount": 1, "Entries": [{"ErrorCode": "ThrottlingException", "ErrorMessage": "slow"}]}

    notifier = Notifier(sns=None, events=PartialFailure(), topic_arn="arn:topic", bus="quarry-bus")

    with pytest.raises(RetryableError, match="ThrottlingException"):
        await notifier.event("Quarry Run Completed", {"run_id": RUN_ID})


async def test_given_a_waiting_job_when_its_submit_job_is_lost_after_the_wait_was_recorded_then_the_outbox_has_it(
        store, queues, bedrock, settings):
    await given(store, a_run(), a_job())
    store.slots[HAIKU] = {"quarry-x-00001-0", "quarry-x-00002-0"}
    queues.crash_on_send = True

    with pytest.raises(WorkerDied):
        await __import__("services.submit.handlers", fromlist=["submit_job"]).submit_job(
            SubmitJob(run_id=RUN_ID, job_key="00000-0"), store=store, bedrock=bedrock, queues=queues, settings=settings)

    assert [(m.job_key, m.seq) for m in store.unsent_messages()] == [("00000-0", 1)]
