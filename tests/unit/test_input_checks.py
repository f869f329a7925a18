"""preprocess's checks on who may start what: every refused or broken start becomes a failed run with
a notice (an email and an answer event), never a dropped message; and what a request may read or
run is the deployment's choice."""
from __future__ import annotations

from pathlib import Path

import pytest
from botocore.stub import Stubber

from services.postprocess.handlers import collect_run
from services.preprocess.handlers import batch_requested, object_created, run_id_of, start_run
from services.preprocess.models import ModelCatalog
from shared.adapters.objects import SyncObjects
from shared.domain.runs import Run
from shared.domain.spec import Profiles, RunSpec
from shared.errors import PermanentError, RetryableError
from shared.messages import BatchRequested, CollectRun, RunFinished, S3ObjectCreated, StartRun
from shared.settings import Settings
from tests.unit.fakes import FakeObjects, FakeQueues, FakeRuntime, FakeStore

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
CSV = b"text\n" + b"".join(b"review %d\n" % n for n in range(5))
INPUT = "s3://quarry-inputs/incoming/summarize/r.csv"
PROFILES = Profiles({"summarize": {"model_id": HAIKU, "template": "Summarize: {{ text }}"}}, source="profiles.yaml")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(workdir=tmp_path / "work", min_records_per_job=2, max_records_per_job=3)


def notices(store: FakeStore, queues: FakeQueues) -> list[RunFinished]:
    """RunFinished notices sent, or kept in the store's outbox to be sent with the change."""
    kept = [item.message for item, _ in store.outbox.values()]
    return [m for m in queues.to("notify") + kept if isinstance(m, RunFinished)]


def only_run(store: FakeStore) -> Run:
    [run] = store.runs.values()
    return run


class ObjectsThatFailToHead(FakeObjects):
    def __init__(self, objects: dict[str, bytes], error: Exception) -> None:
        super().__init__(objects)
        self.error = error

    def size(self, uri: str) -> int | None:
        raise self.error


def s3_event(key: str = "incoming/summarize/r.csv") -> S3ObjectCreated:
    return S3ObjectCreated.model_validate({
        "id": "evt-1", "source": "aws.s3", "detail-type": "Object Created",
        "detail": {"bucket": {"name": "quarry-inputs"}, "object": {"key": key, "size": len(CSV), "etag": "etag1"}}})


def request(detail, event_id: str = "evt-9") -> BatchRequested:
    return BatchRequested.model_validate({"id": event_id, "source": "com.example.crm",
                                          "detail-type": "Quarry Batch Requested", "detail": detail})


async def drop(event, objects, store, queues, settings, models=None) -> None:
    await object_created(event, profiles=PROFILES, objects=objects, store=store, queues=queues, runtime=FakeRuntime(),
                         settings=settings, models=models)


async def ask(event, objects, store, queues, settings, models=None) -> None:
    await batch_requested(event, profiles=PROFILES, objects=objects, store=store, queues=queues, runtime=FakeRuntime(),
                          settings=settings, models=models)


# --- a HEAD that is not a 404 never reads as "missing" --------------------------------------------

async def test_given_a_throttled_head_of_a_dropped_file_when_s3_reports_it_then_the_message_is_retried(
        store, queues, settings):
    objects = ObjectsThatFailToHead({INPUT: CSV}, RetryableError("reading: SlowDown"))

    with pytest.raises(RetryableError):
        await drop(s3_event(), objects, store, queues, settings)

    assert store.runs == {}


async def test_given_a_refused_head_of_a_dropped_file_when_s3_reports_it_then_the_run_fails_naming_it(
        store, queues, settings):
    objects = ObjectsThatFailToHead({INPUT: CSV}, PermanentError("reading: 403 Forbidden"))

    await drop(s3_event(), objects, store, queues, settings)

    run = only_run(store)
    assert run.status == "FAILED" and run.error.startswith(f"{INPUT} cannot be read") and "403" in run.error
    assert [n.outcome for n in notices(store, queues)] == ["FAILED"]


def stubbed_objects(code: str, status: int) -> SyncObjects:
    import boto3

    s3 = boto3.client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    stubber = Stubber(s3)
    stubber.add_client_error("head_object", service_error_code=code, http_status_code=status)
    stubber.activate()
    return SyncObjects(s3)


@pytest.mark.parametrize("code,status,error", [
    ("SlowDown", 503, RetryableError), ("InternalError", 500, RetryableError), ("403", 403, PermanentError)])
def test_given_a_head_error_other_than_404_when_sizing_an_object_then_it_is_a_domain_error_not_missing(
        code, status, error):
    with pytest.raises(error):
        stubbed_objects(code, status).size("s3://bucket/key.csv")


def test_given_a_404_when_sizing_an_object_then_it_is_missing():
    assert stubbed_objects("404", 404).size("s3://bucket/key.csv") is None


# --- request events always get an answer ----------------------------------------------------------

async def test_given_a_request_id_reused_for_another_input_when_received_then_a_failed_run_answers_it(
        store, queues, settings):
    objects = FakeObjects({INPUT: CSV, "s3://quarry-inputs/other.csv": CSV})
    await ask(request({"input_uri": INPUT, "profile": "summarize", "request_id": "crm-1"}, "evt-1"),
              objects, store, queues, settings)

    await ask(request({"input_uri": "s3://quarry-inputs/other.csv", "profile": "summarize", "request_id": "crm-1"},
                      "evt-2"), objects, store, queues, settings)

    first = store.runs[run_id_of("event:crm-1")]
    [second] = [run for run in store.runs.values() if run.run_id != first.run_id]
    assert first.status == "RUNNING" and first.request_id == "crm-1"
    assert second.status == "FAILED" and second.request_id == "crm-1"
    assert "request_id 'crm-1' was already used by run " + first.run_id in second.error
    assert [n.run_id for n in notices(store, queues)] == [second.run_id]


async def test_given_the_same_request_redelivered_when_received_then_nothing_more_happens(store, queues, settings):
    objects = FakeObjects({INPUT: CSV})
    event = request({"input_uri": INPUT, "profile": "summarize", "request_id": "crm-1"})
    await ask(event, objects, store, queues, settings)
    sent = list(queues.sent)

    await ask(event, objects, store, queues, settings)

    assert len(store.runs) == 1 and queues.sent == sent


async def test_given_a_5000_character_request_id_when_received_then_it_is_answered_with_a_failed_run(
        store, queues, settings):
    await ask(request({"input_uri": INPUT, "profile": "summarize", "request_id": "r" * 5000}, "evt-long"),
              FakeObjects({INPUT: CSV}), store, queues, settings)

    run = only_run(store)
    assert run.status == "FAILED" and "request_id" in run.error and "128 characters" in run.error
    assert run.source_key == "event:evt-long", "never a key DynamoDB cannot hold"
    assert run.request_id == "r" * 128, "the sender can still match the answer"
    assert [n.outcome for n in notices(store, queues)] == ["FAILED"]


@pytest.mark.parametrize("detail", [[1, 2], "a string", 42, None])
async def test_given_a_detail_that_is_json_but_not_an_object_when_received_then_a_failed_run_answers_it(
        detail, store, queues, settings):
    await ask(request(detail), FakeObjects(), store, queues, settings)

    run = only_run(store)
    assert run.status == "FAILED" and "not an object" in run.error and "evt-9" in run.error
    assert [n.outcome for n in notices(store, queues)] == ["FAILED"]


# --- inputs only from where the deployment allows -------------------------------------------------

@pytest.mark.parametrize("uri", ["s3://quarry-results/runs/0123/results.csv", "s3://someone-else/data.csv",
                                 "s3://quarry-inputs-evil/data.csv"])
async def test_given_a_request_for_an_input_outside_the_allowed_places_when_received_then_the_run_fails_unread(
        uri, store, queues, settings):
    objects = FakeObjects({uri: CSV})
    objects.open_errors.append(AssertionError("the input must not be read"))

    await ask(request({"input_uri": uri, "profile": "summarize"}), objects, store, queues, settings)

    run = only_run(store)
    assert run.status == "FAILED" and run.error.startswith(f"{uri} is outside the places this deployment reads")
    assert "AllowedInputLocations" in run.error
    assert [n.outcome for n in notices(store, queues)] == ["FAILED"]


async def test_given_a_location_on_the_allow_list_when_a_request_names_it_then_the_run_starts(
        store, queues, tmp_path):
    settings = Settings(workdir=tmp_path, min_records_per_job=2, max_records_per_job=3,
                        allowed_inputs=["s3://acme-exports/quarry/"])
    uri = "s3://acme-exports/quarry/tickets.csv"

    await ask(request({"input_uri": uri, "profile": "summarize"}), FakeObjects({uri: CSV}), store, queues, settings)

    assert only_run(store).status == "RUNNING"


async def test_given_a_cli_start_of_another_bucket_when_started_then_the_run_fails_unread(store, queues, settings):
    spec = RunSpec(model_id=HAIKU, template="{{ text }}")
    start = StartRun(run_id="a" * 32, input_uri="s3://quarry-work/runs/x/rows.parquet", spec=spec, origin="cli",
                     source_key="cli:a")

    await start_run(start, store=store, queues=queues, objects=FakeObjects(), runtime=FakeRuntime(), settings=settings)

    assert "is outside the places this deployment reads" in only_run(store).error


# --- models: allowed by the deployment and served by Bedrock --------------------------------------

class Catalogue:
    def __init__(self, ids: set[str]) -> None:
        self.ids, self.calls = ids, 0

    async def foundation_model_ids(self) -> set[str]:
        self.calls += 1
        return self.ids


async def test_given_a_model_of_a_known_family_that_bedrock_does_not_serve_when_dropped_then_no_job_is_made(
        store, queues, settings):
    catalogue = Catalogue({HAIKU, "anthropic.claude-3-5-sonnet-20240620-v1:0"})
    objects = FakeObjects({INPUT: CSV, INPUT + ".spec.json": b'{"model_id": "anthropic.claude-9-opus-20990101-v1:0"}'})

    await drop(s3_event(), objects, store, queues, settings, models=ModelCatalog(catalogue, allowed=["*"]))

    run = only_run(store)
    assert run.status == "FAILED" and "'anthropic.claude-9-opus-20990101-v1:0' is not one Bedrock serves" in run.error
    assert HAIKU in run.error, "the provider's served models are listed"
    assert store.jobs == {} and queues.to("submit") == []


async def test_given_an_inference_profile_of_a_served_model_when_checked_then_it_passes_and_the_list_is_cached():
    catalogue = Catalogue({HAIKU})
    models = ModelCatalog(catalogue, allowed=["*"])

    await models.check("us." + HAIKU)
    await models.check(f"arn:aws:bedrock:us-east-1::foundation-model/{HAIKU}")
    await models.check("arn:aws:bedrock:us-east-1:123456789012:custom-model/anthropic.x/abc")

    assert catalogue.calls == 1


async def test_given_a_model_outside_the_allowed_globs_when_a_sidecar_names_it_then_the_run_fails(
        store, queues, settings):
    objects = FakeObjects({INPUT: CSV, INPUT + ".spec.json": b'{"model_id": "anthropic.claude-3-5-sonnet-20240620-v1:0"}'})
    models = ModelCatalog(Catalogue({HAIKU, "anthropic.claude-3-5-sonnet-20240620-v1:0"}),
                          allowed=["anthropic.claude-3-haiku-*"])

    await drop(s3_event(), objects, store, queues, settings, models=models)

    assert "is not one this deployment allows (anthropic.claude-3-haiku-*)" in only_run(store).error


async def test_given_an_unknown_profile_when_dropped_then_the_error_names_the_file(store, queues, settings):
    uri = "s3://quarry-inputs/incoming/nope/r.csv"

    await drop(s3_event("incoming/nope/r.csv"), FakeObjects({uri: CSV}), store, queues, settings)

    assert only_run(store).error.startswith(f"{uri}: unknown profile 'nope'")


# --- a cancel before staging ends the run -----------------------------------------------------------

async def test_given_a_run_cancelled_before_its_input_was_staged_when_collected_then_it_ends_cancelled(
        store, queues, settings):
    run = Run(run_id="b" * 32, status="CANCELLING", cancel_requested=True, input_uri=INPUT, origin="s3",
              source_key="s3:x", spec=RunSpec(model_id=HAIKU, template="{{ text }}"))
    await store.create_run(run)

    await collect_run(CollectRun(run_id=run.run_id), store=store, queues=queues, objects=FakeObjects(),
                      runtime=FakeRuntime(), settings=settings)

    ended = await store.get_run(run.run_id)
    assert ended.status == "CANCELLED" and "before its input was read" in ended.error
    assert [n.outcome for n in notices(store, queues)] == ["CANCELLED"]
