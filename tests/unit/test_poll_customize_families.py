"""poll's checks of a customization job and of its hosting: Bedrock's state is recorded, the run's
collection is asked for in the same write when the job calls for it, and a stale check does nothing.
In-memory fakes of the ports."""
from __future__ import annotations

from pathlib import Path

import pytest

from services.poll.handlers import check_job
from shared.adapters.customization import CustomizationState, HostingState
from shared.messages import CheckJob, CollectRun
from shared.settings import Settings
from tests.unit.test_customize_watchdog import RUN_ID, a_customize_run, a_job

JOB_ARN = "arn:aws:bedrock:us-east-1:123456789012:model-customization-job/abc"
PT_ARN = "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/xyz"


class BedrockCustomizations:
    """Answers every read with the state a test set."""

    def __init__(self, *, job: CustomizationState | None = None, hosting: HostingState | None = None) -> None:
        self.job, self.hosting = job, hosting

    async def get_job(self, identifier: str) -> CustomizationState | None:
        return self.job

    async def get_hosting(self, kind: str, identifier: str) -> HostingState | None:
        return self.hosting


def collections(queues) -> list[str]:
    """The runs whose collection was asked for."""
    return [m.run_id for m in queues.to("postprocess") if isinstance(m, CollectRun)]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(poll_interval_s=45, workdir=tmp_path / "work")


async def check(key: str, customizations, store, queues, bedrock, settings, *, seq: int | None = None) -> None:
    await check_job(CheckJob(run_id=RUN_ID, job_key=key, seq=seq), store=store, bedrock=bedrock, queues=queues,
                    settings=settings, customizations=customizations)


async def test_given_a_completed_customization_job_when_checked_then_it_is_completed_and_its_run_collected(
        store, queues, bedrock, settings):
    await store.create_run(a_customize_run())
    await store.put_new_jobs([a_job("customization", "customization_job", "RUNNING", bedrock_arn=JOB_ARN)])
    done = CustomizationState(arn=JOB_ARN, status="Completed", failure_message=None, output_model_arn="arn:model",
                              training_loss=0.5, validation_loss=0.6)

    await check("customization", BedrockCustomizations(job=done), store, queues, bedrock, settings, seq=0)

    job = await store.get_job(RUN_ID, "customization")
    assert (job.status, job.custom_model_arn, job.training_loss, job.check_seq) == ("COMPLETED", "arn:model", 0.5, 1)
    assert collections(queues) == [RUN_ID]
    assert queues.to("poll") == [], "an ended job is not checked again"


async def test_given_a_hosting_come_into_service_when_checked_then_it_runs_its_run_is_collected_and_it_is_watched(
        store, queues, bedrock, settings):
    await store.create_run(a_customize_run())
    await store.put_new_jobs([a_job("hosting", "hosting", "SUBMITTED", bedrock_arn=PT_ARN, hosting_kind="provisioned")])
    in_service = HostingState(kind="provisioned", arn=PT_ARN, name="quarry-x-hosting", status="InService")

    await check("hosting", BedrockCustomizations(hosting=in_service), store, queues, bedrock, settings)

    job = await store.get_job(RUN_ID, "hosting")
    assert (job.status, job.bedrock_status) == ("RUNNING", "InService")
    assert collections(queues) == [RUN_ID]
    assert [(m.job_key, m.seq) for m in queues.to("poll")] == [("hosting", 1)]


async def test_given_a_hosting_still_creating_when_checked_then_it_is_checked_again_and_nothing_is_collected(
        store, queues, bedrock, settings):
    await store.create_run(a_customize_run())
    await store.put_new_jobs([a_job("hosting", "hosting", "SUBMITTED", bedrock_arn=PT_ARN, hosting_kind="provisioned")])
    creating = HostingState(kind="provisioned", arn=PT_ARN, name="quarry-x-hosting", status="Creating")

    await check("hosting", BedrockCustomizations(hosting=creating), store, queues, bedrock, settings)

    assert (await store.get_job(RUN_ID, "hosting")).status == "SUBMITTED"
    assert collections(queues) == []
    assert [(m.job_key, m.seq) for m in queues.to("poll")] == [("hosting", 1)]


@pytest.mark.parametrize("key, family", [("customization", "customization_job"), ("hosting", "hosting")])
async def test_given_a_check_of_an_old_loop_when_it_arrives_then_nothing_is_read_written_or_sent(
        key, family, store, queues, bedrock, settings):
    await store.create_run(a_customize_run())
    await store.put_new_jobs([a_job(key, family, "RUNNING", bedrock_arn=PT_ARN, hosting_kind="provisioned",
                                    check_seq=3)])
    before = await store.get_job(RUN_ID, key)

    await check(key, BedrockCustomizations(), store, queues, bedrock, settings, seq=2)

    assert await store.get_job(RUN_ID, key) == before
    assert queues.sent == []
