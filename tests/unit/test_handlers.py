"""The workers' handlers against in-memory fakes of their ports: what each does, and that doing it
twice (a redelivery) changes nothing more."""
from __future__ import annotations

from pathlib import Path

import pytest

from services.notify.handlers import email, run_finished
from services.poll.handlers import check_job, job_state_changed
from services.postprocess.handlers import collect_run
from services.preprocess.handlers import batch_requested, object_created, reject, start_run
from services.submit.handlers import cancel_run, submit_job
from shared.domain.runs import Job, Run, job_name
from shared.domain.spec import Profiles, RunSpec
from shared.errors import ConflictError, PermanentError, RetryableError
from shared.messages import (
    BatchRequested, BedrockJobStateChanged, CancelRun, CheckJob, CollectRun, RunFinished, S3ObjectCreated, StartRun,
    SubmitJob,
)
from shared.settings import Settings
from tests.unit.fakes import FakeBatchJobs, FakeNotifier, FakeObjects, FakeRuntime, FakeStore, arn_for

RUN_ID = "0123456789abcdef0123456789abcdef"
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
SPEC = RunSpec(model_id=HAIKU, template="Summarize: {{ text }}", name="reviews")
POLL_S = 45


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(model_concurrency={"*": 2}, poll_interval_s=POLL_S, workdir=tmp_path / "work",
                    min_records_per_job=2, max_records_per_job=3)


def a_run(status: str = "RUNNING", **changes) -> Run:
    changes.setdefault("spec", SPEC)
    return Run(run_id=RUN_ID, status=status, input_uri="s3://quarry-inputs/incoming/summarize/r.csv",
               origin="cli", source_key=f"cli:{RUN_ID}", **changes)


def a_job(key: str = "00000-0", status: str = "PENDING", **changes) -> Job:
    index, attempt = (int(part) for part in key.split("-"))
    return Job(run_id=RUN_ID, job_key=key, index=index, attempt=attempt, status=status, model_id=HAIKU,
               chunk_uri=f"s3://quarry-work/runs/{RUN_ID}/input/chunk-{index:05d}.jsonl",
               output_uri=f"s3://quarry-work/runs/{RUN_ID}/output/", records=100, bytes=10_000,
               first_row=index * 100, end_row=index * 100 + 100, **changes)


async def given(store: FakeStore, run: Run, *jobs: Job) -> None:
    await store.create_run(run)
    await store.put_new_jobs(list(jobs))


async def stored_job(store: FakeStore, key: str = "00000-0") -> Job:
    job = await store.get_job(RUN_ID, key)
    assert job is not None
    return job


# --- submit -------------------------------------------------------------------------------------------
async def test_given_a_pending_job_when_submitted_then_bedrock_creates_it_once_with_the_jobs_own_token(
        store, queues, bedrock, settings):
    await given(store, a_run(), a_job())

    await submit_job(SubmitJob(run_id=RUN_ID, job_key="00000-0"), store=store, bedrock=bedrock, queues=queues,
                     settings=settings)

    job = await stored_job(store)
    assert bedrock.tokens_sent == [job_name(RUN_ID, "00000-0")]
    assert (job.status, job.bedrock_arn) == ("SUBMITTED", arn_for(job_name(RUN_ID, "00000-0")))
    assert await store.slot_holders(HAIKU) == {job.name}


async def test_given_a_submitted_job_when_submit_is_done_then_its_first_check_is_scheduled_after_the_poll_interval(
        store, queues, bedrock, settings):
    await given(store, a_run(), a_job())

    await submit_job(SubmitJob(run_id=RUN_ID, job_key="00000-0"), store=store, bedrock=bedrock, queues=queues,
                     settings=settings)

    assert queues.sent == [("poll", CheckJob(run_id=RUN_ID, job_key="00000-0", seq=0,
                                             correlation_id=queues.sent[0][1].correlation_id), POLL_S)]


async def test_given_a_crash_after_bedrock_made_the_job_when_submit_job_is_redelivered_then_the_same_job_comes_back(
        store, queues, bedrock, settings):
    # The first delivery recorded SUBMITTING and Bedrock made the job, then the worker died.
    await given(store, a_run(), a_job(status="SUBMITTING"))
    first_arn = await bedrock.create(await stored_job(store))

    await submit_job(SubmitJob(run_id=RUN_ID, job_key="00000-0"), store=store, bedrock=bedrock, queues=queues,
                     settings=settings)

    assert bedrock.tokens_sent == [job_name(RUN_ID, "00000-0")] * 2
    assert list(bedrock.jobs) == [first_arn]
    assert (await stored_job(store)).bedrock_arn == first_arn


async def test_given_a_job_already_submitted_when_submit_job_is_redelivered_then_bedrock_is_not_called_again(
        store, queues, bedrock, settings):
    await given(store, a_run(), a_job())
    cmd = SubmitJob(run_id=RUN_ID, job_key="00000-0")
    await submit_job(cmd, store=store, bedrock=bedrock, queues=queues, settings=settings)

    await submit_job(cmd, store=store, bedrock=bedrock, queues=queues, settings=settings)

    assert len(bedrock.tokens_sent) == 1
    assert (await stored_job(store)).status == "SUBMITTED"


async def test_given_every_slot_taken_when_a_job_is_submitted_then_it_waits_with_a_fresh_delayed_message(
        store, queues, bedrock, settings):
    await given(store, a_run(), a_job())
    store.slots[HAIKU] = {job_name(RUN_ID, "00001-0"), job_name(RUN_ID, "00002-0")}

    await submit_job(SubmitJob(run_id=RUN_ID, job_key="00000-0"), store=store, bedrock=bedrock, queues=queues,
                     settings=settings)

    # Waiting is not a failure of this message: it is deleted, and the wait goes on in a new one,
    # so hours of waiting never reach the queue's receive limit.
    job = await stored_job(store)
    assert bedrock.tokens_sent == []
    assert (job.status, job.submit_seq) == ("PENDING", 1)
    assert [(w, m.job_key, m.seq, d) for w, m, d in queues.sent] == [("submit", "00000-0", 1, POLL_S)]
    assert store.unsent_messages() == []


async def test_given_a_waiting_loop_moved_on_when_an_older_copy_of_its_submit_job_arrives_then_it_is_dropped(
        store, queues, bedrock, settings):
    await given(store, a_run(), a_job(submit_seq=3))

    await submit_job(SubmitJob(run_id=RUN_ID, job_key="00000-0", seq=2), store=store, bedrock=bedrock, queues=queues,
                     settings=settings)

    assert (bedrock.tokens_sent, queues.sent) == ([], [])
    assert (await stored_job(store)).version == 0


async def test_given_a_job_started_outside_quarry_when_a_job_is_submitted_then_it_takes_one_of_the_free_slots(
        store, queues, bedrock, settings):
    # Limit 2: one slot held by a Quarry job, the other by a job someone started in the console.
    await given(store, a_run(), a_job())
    store.slots[HAIKU] = {job_name(RUN_ID, "00001-0")}
    bedrock.active[HAIKU] = [job_name(RUN_ID, "00001-0"), "nightly-embeddings"]

    await submit_job(SubmitJob(run_id=RUN_ID, job_key="00000-0"), store=store, bedrock=bedrock, queues=queues,
                     settings=settings)

    assert bedrock.tokens_sent == []
    assert (await stored_job(store)).status == "PENDING"


async def test_given_only_quarrys_own_jobs_active_when_a_job_is_submitted_then_none_counts_as_outside(
        store, queues, bedrock, settings):
    # 00002-0 ended and gave its slot back, but Bedrock still lists it while it stops.
    await given(store, a_run(), a_job())
    store.slots[HAIKU] = {job_name(RUN_ID, "00001-0")}
    bedrock.active[HAIKU] = [job_name(RUN_ID, "00001-0"), job_name(RUN_ID, "00002-0")]

    await submit_job(SubmitJob(run_id=RUN_ID, job_key="00000-0"), store=store, bedrock=bedrock, queues=queues,
                     settings=settings)

    assert (await stored_job(store)).status == "SUBMITTED"


async def test_given_bedrock_rejects_the_job_when_submitted_then_it_fails_frees_its_slot_and_asks_for_collection(
        store, queues, bedrock, settings):
    await given(store, a_run(), a_job())
    bedrock.create_error = PermanentError("ValidationException: the input file has too few records")

    await submit_job(SubmitJob(run_id=RUN_ID, job_key="00000-0"), store=store, bedrock=bedrock, queues=queues,
                     settings=settings)

    job = await stored_job(store)
    assert (job.status, job.message) == ("FAILED", "ValidationException: the input file has too few records")
    assert await store.slot_holders(HAIKU) == set()
    assert [(worker, type(message)) for worker, message, _ in queues.sent] == [("postprocess", CollectRun)]


async def test_given_bedrock_is_throttling_when_a_job_is_submitted_then_it_gives_its_slot_back_and_backs_off(
        store, queues, bedrock, settings):
    await given(store, a_run(), a_job())
    bedrock.create_error = RetryableError("ThrottlingException")

    await submit_job(SubmitJob(run_id=RUN_ID, job_key="00000-0"), store=store, bedrock=bedrock, queues=queues,
                     settings=settings)

    job = await stored_job(store)
    assert (job.status, job.throttles, job.submit_seq) == ("PENDING", 1, 1)
    assert await store.slot_holders(HAIKU) == set(), "no slot is held while waiting to retry a create"
    assert [(w, m.seq, d) for w, m, d in queues.sent] == [("submit", 1, 5)]


async def test_given_creates_throttled_again_and_again_then_the_backoff_grows_with_the_throttles_only(
        store, queues, bedrock, settings):
    await given(store, a_run(), a_job())
    bedrock.create_error = RetryableError("ThrottlingException")
    for seq in (None, 1, 2, 3):
        await submit_job(SubmitJob(run_id=RUN_ID, job_key="00000-0", seq=seq), store=store, bedrock=bedrock,
                         queues=queues, settings=settings)

    assert [d for _, _, d in queues.sent] == [5, 10, 20, 40]
    bedrock.create_error = None
    await submit_job(queues.sent[-1][1], store=store, bedrock=bedrock, queues=queues, settings=settings)
    assert ((await stored_job(store)).status, (await stored_job(store)).throttles) == ("SUBMITTED", 0)


async def test_given_a_pending_job_of_a_cancelling_run_when_submitted_then_it_is_cancelled_instead(
        store, queues, bedrock, settings):
    await given(store, a_run("CANCELLING", cancel_requested=True), a_job())

    await submit_job(SubmitJob(run_id=RUN_ID, job_key="00000-0"), store=store, bedrock=bedrock, queues=queues,
                     settings=settings)

    assert (await stored_job(store)).status == "CANCELLED"
    assert bedrock.tokens_sent == []
    assert [type(message) for message in queues.to("postprocess")] == [CollectRun]


async def test_given_a_job_quarry_does_not_know_when_submitted_then_it_is_a_permanent_error(
        store, queues, bedrock, settings):
    await given(store, a_run())

    with pytest.raises(PermanentError, match="no job 00009-0"):
        await submit_job(SubmitJob(run_id=RUN_ID, job_key="00009-0"), store=store, bedrock=bedrock, queues=queues,
                         settings=settings)


# --- cancel -------------------------------------------------------------------------------------------
async def test_given_a_running_run_when_cancelled_then_active_jobs_are_stopped_and_pending_ones_cancelled(
        store, queues, bedrock):
    await given(store, a_run(),
                a_job("00000-0", "RUNNING", bedrock_arn="arn:running"),
                a_job("00001-0", "SUBMITTED", bedrock_arn="arn:submitted"),
                a_job("00002-0", "PENDING"),
                a_job("00003-0", "COMPLETED", bedrock_arn="arn:done"))

    await cancel_run(CancelRun(run_id=RUN_ID), store=store, bedrock=bedrock, queues=queues)

    assert sorted(bedrock.stopped) == ["arn:running", "arn:submitted"]
    assert [job.status for job in await store.list_jobs(RUN_ID)] == ["RUNNING", "SUBMITTED", "CANCELLED", "COMPLETED"]


async def test_given_a_running_run_when_cancelled_then_it_is_cancelling_and_collection_is_asked_for(
        store, queues, bedrock):
    await given(store, a_run(), a_job("00000-0", "PENDING"))

    await cancel_run(CancelRun(run_id=RUN_ID), store=store, bedrock=bedrock, queues=queues)

    run = await store.get_run(RUN_ID)
    assert (run.status, run.cancel_requested) == ("CANCELLING", True)
    assert [type(message) for message in queues.to("postprocess")] == [CollectRun]


@pytest.mark.parametrize("status", ["FINALIZING", "SUCCEEDED", "CANCELLED"])
async def test_given_a_run_finalizing_or_finished_when_cancelled_then_nothing_changes(status, store, queues, bedrock):
    await given(store, a_run(status), a_job("00000-0", "RUNNING", bedrock_arn="arn:running"))

    await cancel_run(CancelRun(run_id=RUN_ID), store=store, bedrock=bedrock, queues=queues)

    assert (store.runs[RUN_ID].status, store.runs[RUN_ID].version) == (status, 0)
    assert (bedrock.stopped, queues.sent) == ([], [])


async def test_given_no_such_run_when_cancelled_then_it_is_a_permanent_error(store, queues, bedrock):
    with pytest.raises(PermanentError, match=f"no run {RUN_ID}"):
        await cancel_run(CancelRun(run_id=RUN_ID), store=store, bedrock=bedrock, queues=queues)


# --- poll ---------------------------------------------------------------------------------------------
async def a_submitted_job(store: FakeStore, bedrock: FakeBatchJobs) -> str:
    job = a_job(status="SUBMITTED")
    arn = await bedrock.create(job)
    await given(store, a_run(), job.model_copy(update={"bedrock_arn": arn}))
    store.slots[HAIKU] = {job.name}
    return arn


async def test_given_a_job_in_progress_when_checked_then_its_progress_is_recorded(store, queues, bedrock, settings):
    arn = await a_submitted_job(store, bedrock)
    bedrock.set_state(arn, "InProgress", processed=40, succeeded=38, failed=2)

    await check_job(CheckJob(run_id=RUN_ID, job_key="00000-0"), store=store, bedrock=bedrock, queues=queues,
                    settings=settings)

    job = await stored_job(store)
    assert (job.status, job.bedrock_status, job.processed, job.succeeded, job.failed) == (
        "RUNNING", "InProgress", 40, 38, 2)


async def test_given_a_job_in_progress_when_checked_then_it_is_checked_again_after_the_poll_interval(
        store, queues, bedrock, settings):
    arn = await a_submitted_job(store, bedrock)
    bedrock.set_state(arn, "InProgress", processed=40)

    await check_job(CheckJob(run_id=RUN_ID, job_key="00000-0"), store=store, bedrock=bedrock, queues=queues,
                    settings=settings)

    assert [(worker, type(message), delay) for worker, message, delay in queues.sent] == [("poll", CheckJob, POLL_S)]
    assert await store.slot_holders(HAIKU) == {job_name(RUN_ID, "00000-0")}


async def test_given_nothing_changed_on_bedrock_when_checked_then_only_the_loop_number_moves_on(
        store, queues, bedrock, settings):
    arn = await a_submitted_job(store, bedrock)
    bedrock.set_state(arn, "InProgress", processed=40)
    await check_job(CheckJob(run_id=RUN_ID, job_key="00000-0", seq=0), store=store, bedrock=bedrock, queues=queues,
                    settings=settings)
    before = await stored_job(store)

    await check_job(CheckJob(run_id=RUN_ID, job_key="00000-0", seq=1), store=store, bedrock=bedrock, queues=queues,
                    settings=settings)

    after = await stored_job(store)
    assert after.model_dump(exclude={"version", "check_seq", "updated_at"}) == before.model_dump(
        exclude={"version", "check_seq", "updated_at"})
    assert after.check_seq == 2


async def test_given_a_redelivered_submit_job_when_both_check_jobs_arrive_then_only_one_check_loop_goes_on(
        store, queues, bedrock, settings):
    await given(store, a_run(), a_job())
    cmd = SubmitJob(run_id=RUN_ID, job_key="00000-0")
    await submit_job(cmd, store=store, bedrock=bedrock, queues=queues, settings=settings)
    await submit_job(cmd, store=store, bedrock=bedrock, queues=queues, settings=settings)  # redelivered
    first, second = queues.to("poll")
    queues.sent.clear()

    await check_job(first, store=store, bedrock=bedrock, queues=queues, settings=settings)
    await check_job(second, store=store, bedrock=bedrock, queues=queues, settings=settings)

    assert len(queues.to("poll")) == 1, "the second copy is dropped, not a second loop"


async def test_given_a_job_that_ended_when_checked_then_its_slot_is_freed_and_the_run_collected(
        store, queues, bedrock, settings):
    arn = await a_submitted_job(store, bedrock)
    bedrock.set_state(arn, "Completed", processed=100, succeeded=100)

    await check_job(CheckJob(run_id=RUN_ID, job_key="00000-0"), store=store, bedrock=bedrock, queues=queues,
                    settings=settings)

    assert (await stored_job(store)).status == "COMPLETED"
    assert await store.slot_holders(HAIKU) == set()
    assert [(worker, type(message)) for worker, message, _ in queues.sent] == [("postprocess", CollectRun)]


async def test_given_a_job_that_ended_when_checked_twice_then_the_second_check_changes_nothing(
        store, queues, bedrock, settings):
    arn = await a_submitted_job(store, bedrock)
    bedrock.set_state(arn, "Failed", message="The input file has no valid records")
    cmd = CheckJob(run_id=RUN_ID, job_key="00000-0")
    await check_job(cmd, store=store, bedrock=bedrock, queues=queues, settings=settings)
    after_first = await stored_job(store)

    await check_job(cmd, store=store, bedrock=bedrock, queues=queues, settings=settings)

    assert await stored_job(store) == after_first
    assert await store.slot_holders(HAIKU) == set()
    assert {type(message) for message in queues.to("postprocess")} == {CollectRun}
    assert queues.to("poll") == []


async def test_given_a_job_not_submitted_yet_when_checked_then_nothing_happens(store, queues, bedrock, settings):
    await given(store, a_run(), a_job(status="SUBMITTING"))

    await check_job(CheckJob(run_id=RUN_ID, job_key="00000-0"), store=store, bedrock=bedrock, queues=queues,
                    settings=settings)

    assert (await stored_job(store)).version == 0
    assert queues.sent == []


def bedrock_event(name: str, arn: str, status: str) -> BedrockJobStateChanged:
    return BedrockJobStateChanged.model_validate({
        "id": "evt-1", "source": "aws.bedrock", "detail-type": "Batch Inference Job State Change",
        "detail": {"batchJobName": name, "batchJobArn": arn, "status": status}})


async def test_given_a_job_quarry_did_not_start_when_its_state_changes_then_it_is_ignored(store, queues, bedrock,
                                                                                             settings):
    await a_submitted_job(store, bedrock)
    bedrock.set_state("arn:theirs", "Completed", name="nightly-embeddings")

    await job_state_changed(bedrock_event("nightly-embeddings", "arn:theirs", "Completed"), store=store,
                            bedrock=bedrock, queues=queues, settings=settings)

    assert (await stored_job(store)).version == 0
    assert await store.slot_holders(HAIKU) == {job_name(RUN_ID, "00000-0")}
    assert queues.sent == []


async def test_given_one_of_quarrys_jobs_when_bedrock_says_it_ended_then_the_job_ends_and_the_run_is_collected(
        store, queues, bedrock, settings):
    arn = await a_submitted_job(store, bedrock)
    bedrock.set_state(arn, "PartiallyCompleted", processed=100, succeeded=90, failed=10)

    await job_state_changed(bedrock_event(job_name(RUN_ID, "00000-0"), arn, "PartiallyCompleted"), store=store,
                            bedrock=bedrock, queues=queues, settings=settings)

    job = await stored_job(store)
    assert (job.status, job.succeeded, job.failed) == ("PARTIAL", 90, 10)
    assert await store.slot_holders(HAIKU) == set()
    assert [type(message) for message in queues.to("postprocess")] == [CollectRun]


async def test_given_the_event_beat_submits_own_write_when_submit_job_is_retried_then_no_second_job_is_created(
        store, queues, bedrock, settings):
    # Bedrock made the job and its event arrived before submit recorded the ARN.
    await given(store, a_run(), a_job(status="SUBMITTING"))
    store.slots[HAIKU] = {job_name(RUN_ID, "00000-0")}
    arn = await bedrock.create(await stored_job(store))
    await job_state_changed(bedrock_event(job_name(RUN_ID, "00000-0"), arn, "Submitted"), store=store,
                            bedrock=bedrock, queues=queues, settings=settings)

    await submit_job(SubmitJob(run_id=RUN_ID, job_key="00000-0"), store=store, bedrock=bedrock, queues=queues,
                     settings=settings)

    job = await stored_job(store)
    assert (job.status, job.bedrock_arn) == ("SUBMITTED", arn)
    assert len(bedrock.tokens_sent) == 1


async def test_given_the_event_lands_while_submit_is_creating_when_submit_records_the_arn_then_it_loses_cleanly(
        store, queues, settings):
    class EventDuringCreate(FakeBatchJobs):
        async def create(self, job: Job) -> str:
            arn = await super().create(job)
            await job_state_changed(bedrock_event(job.name, arn, "Submitted"), store=store, bedrock=self,
                                    queues=queues, settings=settings)
            return arn

    bedrock = EventDuringCreate()
    await given(store, a_run(), a_job())

    with pytest.raises(ConflictError):
        await submit_job(SubmitJob(run_id=RUN_ID, job_key="00000-0"), store=store, bedrock=bedrock, queues=queues,
                         settings=settings)

    job = await stored_job(store)
    assert (job.status, job.bedrock_arn) == ("SUBMITTED", arn_for(job.name))
    assert len(bedrock.jobs) == 1


# --- notify -------------------------------------------------------------------------------------------
SUMMARY = {"rows": 1200, "succeeded": 1150, "failed": 50, "input_tokens": 120_000, "output_tokens": 30_000,
           "estimated_cost_usd": 0.0337, "jobs": 12, "retried_jobs": 1, "on_demand_records": 4, "duration_s": 812.5,
           "top_errors": [["ThrottlingException", 30], ["ValidationException: too long", 20]],
           "result_uri": "s3://quarry-results/runs/r/results.csv"}


def a_finished_run(outcome: str = "PARTIAL") -> Run:
    return a_run(outcome, summary=SUMMARY, result_uri="s3://quarry-results/runs/r/results.csv")


async def test_given_a_finished_run_when_notified_then_one_email_and_one_event_go_out(store):
    notifier = FakeNotifier()
    await given(store, a_finished_run("PARTIAL"))

    await run_finished(RunFinished(run_id=RUN_ID, outcome="PARTIAL"), store=store, notifier=notifier)

    assert [subject for subject, _ in notifier.emails] == ["Quarry run reviews partially succeeded"]
    assert [(kind, detail["outcome"], detail["result_uri"]) for kind, detail in notifier.events] == [
        ("Quarry Run Completed", "PARTIAL", "s3://quarry-results/runs/r/results.csv")]


async def test_given_a_run_already_notified_when_run_finished_is_redelivered_then_nothing_more_is_sent(store):
    notifier = FakeNotifier()
    await given(store, a_finished_run())
    event = RunFinished(run_id=RUN_ID, outcome="PARTIAL")
    await run_finished(event, store=store, notifier=notifier)

    await run_finished(event, store=store, notifier=notifier)

    assert (len(notifier.emails), len(notifier.events)) == (1, 1)


async def test_given_a_failed_run_when_notified_then_the_event_is_a_run_failed(store):
    notifier = FakeNotifier()
    await given(store, a_run("FAILED", error="the input has no rows"))

    await run_finished(RunFinished(run_id=RUN_ID, outcome="FAILED"), store=store, notifier=notifier)

    assert [(kind, detail["error"]) for kind, detail in notifier.events] == [
        ("Quarry Run Failed", "the input has no rows")]


def test_given_a_summary_when_the_email_is_written_then_it_gives_counts_results_and_top_errors():
    _, body = email(a_finished_run(), "PARTIAL")

    assert "Rows:    1,200 (1,150 succeeded, 50 failed)" in body
    assert "Results: s3://quarry-results/runs/r/results.csv" in body
    assert "Top error reasons:\n      30 × ThrottlingException\n      20 × ValidationException: too long" in body


def test_given_a_run_rejected_before_it_had_a_spec_when_the_email_is_written_then_it_names_the_run_and_error():
    subject, body = email(a_run("FAILED", spec=None, error="unknown profile 'x'"), "FAILED")

    assert subject == f"Quarry run {RUN_ID} failed"
    assert "Error: unknown profile 'x'" in body


# --- preprocess ---------------------------------------------------------------------------------------
SOURCE = "s3://quarry-inputs/incoming/summarize/r.csv#etag1"


async def test_given_a_start_that_cannot_be_a_run_when_rejected_then_a_failed_run_and_its_notice_are_made(
        store, queues):
    await reject("s3://quarry-inputs/incoming/x/r.csv", SOURCE, "s3", "unknown profile 'x'", store=store, queues=queues)

    [run] = store.runs.values()
    assert (run.status, run.error, run.spec) == ("FAILED", "unknown profile 'x'", None)
    assert queues.to("notify") == [RunFinished(run_id=run.run_id, outcome="FAILED",
                                               correlation_id=queues.to("notify")[0].correlation_id)]


async def test_given_a_rejected_source_when_rejected_again_then_no_second_run_or_notice_is_made(store, queues):
    await reject("s3://quarry-inputs/incoming/x/r.csv", SOURCE, "s3", "unknown profile 'x'", store=store, queues=queues)

    await reject("s3://quarry-inputs/incoming/x/r.csv", SOURCE, "s3", "unknown profile 'x'", store=store, queues=queues)

    assert len(store.runs) == 1
    assert len(queues.to("notify")) == 1


async def test_given_a_run_started_from_a_source_when_a_later_start_of_it_is_rejected_then_the_run_is_not_failed(
        store, queues):
    await store.create_run(a_run("PREPARING").model_copy(update={"source_key": SOURCE}))

    await reject("s3://quarry-inputs/incoming/summarize/r.csv", SOURCE, "s3", "sidecar invalid", store=store,
                 queues=queues)

    assert store.runs[RUN_ID].status == "PREPARING"
    assert queues.sent == []


CSV = b"text\n" + b"".join(f"review {n}\n".encode() for n in range(5))
INPUT = "s3://quarry-inputs/incoming/summarize/r.csv"


def a_start(run_id: str = RUN_ID) -> StartRun:
    return StartRun(run_id=run_id, input_uri=INPUT, spec=SPEC, origin="cli", source_key=SOURCE)


async def test_given_an_input_when_a_run_starts_then_its_chunks_become_pending_jobs_sent_to_submit(
        store, queues, settings):
    objects = FakeObjects({INPUT: CSV})

    await start_run(a_start(), store=store, queues=queues, objects=objects, runtime=FakeRuntime(), settings=settings)

    run = await store.get_run(RUN_ID)
    jobs = await store.list_jobs(RUN_ID)
    assert (run.status, run.total_rows, run.jobs_total) == ("RUNNING", 5, len(jobs))
    assert sum(job.records for job in jobs) == 5
    assert all(job.status == "PENDING" and job.chunk_uri in objects.objects for job in jobs)
    assert [message.job_key for message in queues.to("submit")] == [job.job_key for job in jobs]


async def test_given_a_source_already_started_when_started_again_then_no_second_run_is_made(store, queues, settings):
    objects = FakeObjects({INPUT: CSV})
    await start_run(a_start(), store=store, queues=queues, objects=objects, runtime=FakeRuntime(), settings=settings)
    sent = list(queues.sent)

    await start_run(a_start("f" * 32), store=store, queues=queues, objects=objects, runtime=FakeRuntime(),
                    settings=settings)

    assert list(store.runs) == [RUN_ID]
    assert queues.sent == sent


async def test_given_an_input_that_does_not_exist_when_a_run_starts_then_it_fails_with_a_notice(
        store, queues, settings):
    await start_run(a_start(), store=store, queues=queues, objects=FakeObjects(), runtime=FakeRuntime(),
                    settings=settings)

    run = await store.get_run(RUN_ID)
    assert (run.status, run.error) == ("FAILED", f"{INPUT} does not exist (was it deleted before the run started?)")
    assert [message.outcome for message in queues.to("notify")] == ["FAILED"]


def profiles_with_summarize() -> Profiles:
    return Profiles({"summarize": {"model_id": HAIKU, "template": "Summarize: {{ text }}"}}, source="profiles.yaml")


def s3_event(key: str) -> S3ObjectCreated:
    return S3ObjectCreated.model_validate({
        "id": "evt-1", "source": "aws.s3", "detail-type": "Object Created",
        "detail": {"bucket": {"name": "quarry-inputs"}, "object": {"key": key, "size": len(CSV), "etag": "etag1"}}})


async def test_given_a_file_dropped_in_a_profiles_folder_when_s3_reports_it_then_a_run_starts_with_that_profile(
        store, queues, settings):
    objects = FakeObjects({INPUT: CSV})

    await object_created(s3_event("incoming/summarize/r.csv"), profiles=profiles_with_summarize(), objects=objects,
                         store=store, queues=queues, runtime=FakeRuntime(), settings=settings)

    [run] = store.runs.values()
    assert (run.status, run.spec.template, run.source_key) == ("RUNNING", "Summarize: {{ text }}", SOURCE)


async def test_given_a_file_in_an_unknown_profiles_folder_when_s3_reports_it_then_the_run_fails_naming_known_ones(
        store, queues, settings):
    objects = FakeObjects({"s3://quarry-inputs/incoming/translate/r.csv": CSV})

    await object_created(s3_event("incoming/translate/r.csv"), profiles=profiles_with_summarize(), objects=objects,
                         store=store, queues=queues, runtime=FakeRuntime(), settings=settings)

    [run] = store.runs.values()
    assert run.status == "FAILED"
    assert "unknown profile 'translate'" in run.error and "summarize" in run.error
    assert [message.outcome for message in queues.to("notify")] == ["FAILED"]


async def test_given_staging_failed_for_a_moment_when_s3s_event_is_redelivered_then_the_run_is_started_after_all(
        store, queues, settings):
    objects = FakeObjects({INPUT: CSV})
    objects.open_errors.append(RetryableError("SlowDown"))
    event = s3_event("incoming/summarize/r.csv")
    with pytest.raises(RetryableError):
        await object_created(event, profiles=profiles_with_summarize(), objects=objects, store=store, queues=queues,
                             runtime=FakeRuntime(), settings=settings)

    await object_created(event, profiles=profiles_with_summarize(), objects=objects, store=store, queues=queues,
                         runtime=FakeRuntime(), settings=settings)

    [run] = store.runs.values()
    assert run.status == "RUNNING"
    assert len(queues.to("submit")) == run.jobs_total > 0


async def test_given_a_batch_request_with_the_wrong_schema_when_received_then_the_run_fails_and_says_why(
        store, queues, settings):
    event = BatchRequested.model_validate({
        "id": "evt-7", "source": "com.example.crm", "detail-type": "Quarry Batch Requested",
        "detail": {"input_uri": "/tmp/tickets.jsonl", "request_id": "req-7"}})

    await batch_requested(event, profiles=profiles_with_summarize(), objects=FakeObjects(), store=store,
                          queues=queues, runtime=FakeRuntime(), settings=settings)

    [run] = store.runs.values()
    assert (run.status, run.source_key) == ("FAILED", "event:req-7")
    assert "input_uri" in run.error
    assert [message.outcome for message in queues.to("notify")] == ["FAILED"]


# --- postprocess --------------------------------------------------------------------------------------
async def test_given_a_job_still_running_when_the_run_is_collected_then_it_waits_for_that_job(
        store, queues, settings):
    await given(store, a_run(), a_job("00000-0", "COMPLETED", bedrock_arn="arn:a"),
                a_job("00001-0", "RUNNING", bedrock_arn="arn:b"))

    await collect_run(CollectRun(run_id=RUN_ID), store=store, queues=queues, objects=FakeObjects(),
                      runtime=FakeRuntime(), settings=settings)

    assert store.runs[RUN_ID].version == 0
    assert queues.sent == []


@pytest.mark.parametrize("status", ["SUCCEEDED", "FAILED", "CANCELLED", "PREPARING"])
async def test_given_a_run_finished_or_still_preparing_when_collected_then_nothing_happens(
        status, store, queues, settings):
    objects = FakeObjects()
    await given(store, a_run(status), a_job("00000-0", "COMPLETED", bedrock_arn="arn:a"))

    await collect_run(CollectRun(run_id=RUN_ID), store=store, queues=queues, objects=objects, runtime=FakeRuntime(),
                      settings=settings)

    assert store.runs[RUN_ID].version == 0
    assert (queues.sent, objects.objects) == ([], {})
