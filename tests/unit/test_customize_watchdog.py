"""A customize run the watchdog fails ends its Bedrock work at once: its customization job stopped,
its hosting deleted (not left billing until the hosting sweeper's time-to-live), and the error
says so. And a customization job's create that went through while its run was failing is stopped.
In-memory fakes of the ports."""
from __future__ import annotations

from pathlib import Path

import pytest

from services.submit.families import customization_job
from shared.domain.customization import parse_customization
from shared.domain.runs import Job, Run
from shared.messages import RunFinished
from shared.settings import Settings
from shared.watchdog import sweep
from tests.unit.fakes import FakeBatchJobs, FakeQueues, FakeStore

RUN_ID = "fedcba9876543210fedcba9876543210"
BASE = "amazon.titan-text-lite-v1"
SPEC = parse_customization({
    "base_model": BASE, "training_data": "s3://quarry-inputs/tuning/train.jsonl", "custom_model_name": "tuned",
    "hosting": {"type": "provisioned"}, "gate": {"data": "s3://quarry-inputs/tuning/held.jsonl"}, "budget_usd": 50,
}, where="in the test")


class FakeCustomizations:
    """Bedrock's customization jobs and hosting, by name and ARN, recording every stop and delete."""

    def __init__(self) -> None:
        self.jobs: dict[str, str] = {}  # name -> status
        self.hostings: dict[str, str] = {}  # name -> arn
        self.stopped: list[str] = []
        self.deleted: list[str] = []

    def _job_name(self, identifier: str) -> str:
        return identifier.rsplit("/", 1)[-1]

    async def create_job(self, *, name: str, **_: object) -> str:
        self.jobs.setdefault(name, "InProgress")
        return f"arn:aws:bedrock:us-east-1:123456789012:model-customization-job/{name}"

    async def stop_job(self, identifier: str) -> None:
        self.stopped.append(identifier)
        name = self._job_name(identifier)
        if self.jobs.get(name) == "InProgress":
            self.jobs[name] = "Stopped"

    async def delete_hosting(self, kind: str, identifier: str) -> bool:
        self.deleted.append(identifier)
        name = next((n for n, arn in self.hostings.items() if identifier in (n, arn)), None)
        if name is None:
            return False
        del self.hostings[name]
        return True

    async def list_hostings(self, name_prefix: str) -> list:
        return []


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(workdir=tmp_path / "work", max_crashes=3, stall_after_s=300)


def a_customize_run(status: str = "RUNNING") -> Run:
    return Run(run_id=RUN_ID, status=status, kind="customize", spec=None, customization=SPEC,
               input_uri=SPEC.training_data, origin="cli", source_key=f"cli:{RUN_ID}")


def a_job(key: str, family: str, status: str, **changes) -> Job:
    return Job(run_id=RUN_ID, job_key=key, family=family, index=0 if key == "customization" else 1, status=status,
               model_id=BASE, chunk_uri=SPEC.training_data, output_uri="s3://quarry-work/runs/x/customization/",
               records=0, bytes=0, first_row=0, end_row=0, **changes)


async def failed_by_the_watchdog(store: FakeStore, customizations: FakeCustomizations, settings: Settings,
                                 *jobs: Job) -> tuple[Run, FakeQueues]:
    """The run, with `jobs`, whose messages crashed their handler max_crashes times: one sweep."""
    queues = FakeQueues()
    await store.create_run(a_customize_run())
    await store.put_new_jobs(list(jobs))
    for _ in range(settings.max_crashes):
        await store.record_failure(RUN_ID, "KeyError: 'boom'")
    done = await sweep(store=store, queues=queues, bedrock=FakeBatchJobs(), settings=settings,
                       customizations=customizations)
    assert RUN_ID in done.failed
    run = await store.get_run(RUN_ID)
    assert run is not None
    return run, queues


async def test_a_failed_run_whose_job_trains_has_the_job_stopped_at_once(settings):
    store, customizations = FakeStore(), FakeCustomizations()
    training = a_job("customization", "customization_job", "RUNNING")
    arn = await customizations.create_job(name=training.name)

    run, queues = await failed_by_the_watchdog(store, customizations, settings,
                                               training.model_copy(update={"bedrock_arn": arn}))

    assert run.status == "FAILED" and "its customization job is stopped" in run.error
    assert customizations.stopped == [arn] and customizations.jobs[training.name] == "Stopped"
    assert [(m.run_id, m.outcome) for m in queues.to("notify") if isinstance(m, RunFinished)] == [(RUN_ID, "FAILED")]


async def test_a_failed_run_with_a_hosting_in_service_has_it_deleted_at_once_not_at_its_ttl(settings):
    store, customizations = FakeStore(), FakeCustomizations()
    hosting = a_job("hosting", "hosting", "RUNNING", hosting_kind="provisioned",
                    bedrock_arn="arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abc")
    customizations.hostings[hosting.name] = hosting.bedrock_arn

    run, _ = await failed_by_the_watchdog(store, customizations, settings,
                                          a_job("customization", "customization_job", "COMPLETED"), hosting)

    assert customizations.hostings == {} and customizations.deleted == [hosting.bedrock_arn]
    assert "its hosting is deleted" in run.error and "customization job" not in run.error
    job = await store.get_job(RUN_ID, "hosting")
    assert job.status == "CANCELLED" and job.message == "deleted: the run failed"


async def test_a_hosting_requested_but_never_recorded_is_deleted_by_name_and_left_to_submit(settings):
    store, customizations = FakeStore(), FakeCustomizations()
    hosting = a_job("hosting", "hosting", "SUBMITTING", hosting_kind="provisioned")
    customizations.hostings[hosting.name] = "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/made"

    await failed_by_the_watchdog(store, customizations, settings,
                                 a_job("customization", "customization_job", "COMPLETED"), hosting)

    assert customizations.deleted == [hosting.name] and customizations.hostings == {}
    # Still SUBMITTING: an in-flight create's worker moves it (and deletes what it made) itself.
    assert (await store.get_job(RUN_ID, "hosting")).status == "SUBMITTING"


async def test_a_customization_job_created_while_its_run_failed_is_stopped_by_the_create_that_made_it(settings):
    store, customizations, queues = FakeStore(), FakeCustomizations(), FakeQueues()
    await store.create_run(a_customize_run())
    training = a_job("customization", "customization_job", "SUBMITTING")
    await store.put_new_jobs([training])
    original = customizations.create_job

    async def create_while_the_run_fails(**kwargs):
        run = await store.get_run(RUN_ID)
        await store.move_run(run, "FAILED", error="failed by the watchdog meanwhile")
        return await original(**kwargs)

    customizations.create_job = create_while_the_run_fails
    await customization_job.submit(training, store=store, queues=queues, settings=settings,
                                   customizations=customizations)

    assert customizations.jobs[training.name] == "Stopped"


async def test_a_pending_create_of_a_run_already_over_makes_no_job_and_stops_one_a_crash_left(settings):
    store, customizations, queues = FakeStore(), FakeCustomizations(), FakeQueues()
    await store.create_run(a_customize_run("FAILED"))
    training = a_job("customization", "customization_job", "SUBMITTING")
    await store.put_new_jobs([training])
    customizations.jobs[training.name] = "InProgress"  # created just before the worker died

    await customization_job.submit(training, store=store, queues=queues, settings=settings,
                                   customizations=customizations)

    assert customizations.stopped == [training.name] and customizations.jobs == {training.name: "Stopped"}
    assert (await store.get_job(RUN_ID, "customization")).status == "CANCELLED"
