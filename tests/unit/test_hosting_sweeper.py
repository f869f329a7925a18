"""The hosting sweeper (shared/hosting_sweeper.py): every Quarry hosting that must not bill any more
is deleted and emailed about once; a kept one, one still in use within its time-to-live, and one
that is not Quarry's are left alone. In-memory fakes of the ports."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from shared.adapters.customization import HostingState
from shared.domain.runs import now
from shared.hosting_sweeper import sweep_hosting
from shared.messages import HostingSwept
from shared.settings import Settings
from tests.unit.fakes import FakeQueues, FakeStore
from tests.unit.test_customize_watchdog import RUN_ID, FakeCustomizations, a_customize_run, a_job

TTL_S, GRACE_S = 3600, 30
PT = "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/pt0000000001"


class ListingCustomizations(FakeCustomizations):
    """The fake, listing its hosting as Bedrock does (name, ARN, creation time)."""

    def __init__(self) -> None:
        super().__init__()
        self.created: dict[str, dt.datetime] = {}

    def add(self, name: str, arn: str, *, age_s: float) -> None:
        self.hostings[name] = arn
        self.created[name] = now() - dt.timedelta(seconds=age_s)

    async def list_hostings(self, name_prefix: str) -> list[HostingState]:
        return [HostingState("provisioned", arn, name, "InService", created=self.created[name])
                for name, arn in self.hostings.items() if name.startswith(name_prefix)]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(workdir=tmp_path / "work", hosting_ttl_s=TTL_S, outbox_grace_s=GRACE_S)


NAME = f"quarry-{RUN_ID}-hosting"


async def swept(settings: Settings, store: FakeStore, bedrock: ListingCustomizations) -> tuple[list[str], FakeQueues]:
    queues = FakeQueues()
    deleted = await sweep_hosting(store=store, queues=queues, customizations=bedrock, settings=settings)
    return deleted, queues


async def test_an_old_hosting_whose_run_is_lost_is_deleted_and_emailed_about_once(settings):
    bedrock = ListingCustomizations()
    bedrock.add(NAME, PT, age_s=2 * 3600)

    deleted, queues = await swept(settings, FakeStore(), bedrock)

    assert deleted == [PT] and bedrock.hostings == {}
    [notice] = queues.to("notify")
    assert isinstance(notice, HostingSwept) and notice.hosting_arn == PT and "its run is lost" in notice.reason


async def test_a_hosting_whose_run_is_lost_but_which_was_just_requested_is_left_for_now(settings):
    # Its run's item may still be on its way (the outbox grace): never delete what is being made.
    bedrock = ListingCustomizations()
    bedrock.add(NAME, PT, age_s=GRACE_S / 3)

    deleted, _ = await swept(settings, FakeStore(), bedrock)

    assert deleted == [] and bedrock.hostings == {NAME: PT}


async def test_a_hosting_of_a_run_that_ended_without_keeping_it_is_deleted_and_its_job_cancelled(settings):
    store, bedrock = FakeStore(), ListingCustomizations()
    run = a_customize_run("FAILED").model_copy(update={"updated_at": now() - dt.timedelta(seconds=GRACE_S * 2)})
    await store.create_run(run)
    await store.put_new_jobs([a_job("hosting", "hosting", "RUNNING", hosting_kind="provisioned", bedrock_arn=PT)])
    bedrock.add(NAME, PT, age_s=600)

    deleted, queues = await swept(settings, store, bedrock)

    assert deleted == [PT] and "ended FAILED without keeping it" in queues.to("notify")[0].reason
    job = await store.get_job(RUN_ID, "hosting")
    assert job.status == "CANCELLED" and job.message.startswith("deleted by the sweeper")


async def test_a_hosting_older_than_its_ttl_while_its_run_still_goes_is_deleted(settings):
    store, bedrock = FakeStore(), ListingCustomizations()
    await store.create_run(a_customize_run("RUNNING"))
    await store.put_new_jobs([a_job("hosting", "hosting", "RUNNING", hosting_kind="provisioned", bedrock_arn=PT)])
    bedrock.add(NAME, PT, age_s=TTL_S + 60)

    deleted, queues = await swept(settings, store, bedrock)

    assert deleted == [PT] and "time-to-live" in queues.to("notify")[0].reason
    assert queues.to("notify")[0].hourly_usd == 7.10  # Titan Text Lite, one model unit


@pytest.mark.parametrize("status, job_status, age_s", [
    ("SUCCEEDED", "COMPLETED", 10 * TTL_S),  # kept after its gate passed: the user deletes it
    ("RUNNING", "RUNNING", TTL_S - 60),  # its gate runs on it, within its time-to-live
])
async def test_a_kept_hosting_or_one_in_use_within_its_ttl_is_left_alone(settings, status, job_status, age_s):
    store, bedrock = FakeStore(), ListingCustomizations()
    await store.create_run(a_customize_run(status).model_copy(
        update={"updated_at": now() - dt.timedelta(seconds=GRACE_S * 2)}))
    await store.put_new_jobs([a_job("hosting", "hosting", job_status, hosting_kind="provisioned", bedrock_arn=PT)])
    bedrock.add(NAME, PT, age_s=age_s)

    deleted, queues = await swept(settings, store, bedrock)

    assert deleted == [] and bedrock.hostings == {NAME: PT} and queues.sent == []


async def test_a_hosting_named_like_quarrys_but_not_by_quarry_is_left_alone(settings):
    bedrock = ListingCustomizations()
    bedrock.add("quarry-team-shared-pt", PT, age_s=10 * TTL_S)

    deleted, _ = await swept(settings, FakeStore(), bedrock)

    assert deleted == [] and bedrock.hostings == {"quarry-team-shared-pt": PT}
