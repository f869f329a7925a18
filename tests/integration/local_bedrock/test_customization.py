"""Contract: model customization jobs and the custom models they make, as Bedrock runs them:
creation rules, data validation, sub-statuses, metrics in S3, events, stops, faults, custom model
operations, serving a custom model, and state that survives a restart."""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
import time
import uuid
from typing import Any, Callable

import pytest
from botocore.exceptions import ClientError

from infra.processes import ROOT, start_local_bedrock
from tests.integration.local_bedrock.conftest import TEST_LIMITS, control
from tests.integration.local_bedrock.jobs_kit import (
    ROLE, claude_record, create_job, events_queue, events_until, jsonl, put_input, wait_for,
)

TITAN = "amazon.titan-text-lite-v1"
NOVA = "amazon.nova-micro-v1:0"
CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
TERMINAL = {"Completed", "Failed", "Stopped"}
DIALOGSUM = ROOT.parent / "shared" / "data" / "dialogsum" / "train.jsonl"
TRAINING_CSV = "training_artifacts/step_wise_training_metrics.csv"
VALIDATION_CSV = "validation_artifacts/post_fine_tuning_validation/validation/validation_metrics.csv"


def records(count: int, start: int = 0) -> list[dict[str, str]]:
    return [{"prompt": f"Summarize the note about shipment {i} from the warehouse in Lyon to the store.",
             "completion": f"Shipment {i} left Lyon."} for i in range(start, start + count)]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def put(s3, bucket: str, key: str, rows: list[dict[str, Any]] | bytes) -> str:
    body = rows if isinstance(rows, bytes) else jsonl(rows)
    return put_input(s3, bucket, key, body)


def create(bedrock, buckets: tuple[str, str], *, train_uri: str, model: str = TITAN, **extra: Any) -> str:
    params: dict[str, Any] = {
        "jobName": unique("ft"),
        "customModelName": unique("model"),
        "roleArn": ROLE,
        "baseModelIdentifier": model,
        "trainingDataConfig": {"s3Uri": train_uri},
        "outputDataConfig": {"s3Uri": f"s3://{buckets[1]}/customization/"},
        "hyperParameters": {"epochCount": "2", "batchSize": "4"},
    }
    params.update(extra)
    return bedrock.create_model_customization_job(**params)["jobArn"]


def wait_job(bedrock, arn: str, statuses: set[str] = TERMINAL, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = bedrock.get_model_customization_job(jobIdentifier=arn)
        if job["status"] in statuses:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {arn} still {job['status']} after {timeout}s (wanted {statuses})")
        time.sleep(0.05)


def wait_stage(bedrock, arn: str, stage: str, timeout: float = 30) -> dict[str, Any]:
    """The job once the sub-status `stage` is InProgress."""
    deadline = time.monotonic() + timeout
    while True:
        job = bedrock.get_model_customization_job(jobIdentifier=arn)
        if job["statusDetails"][stage]["status"] == "InProgress":
            return job
        if time.monotonic() > deadline or job["status"] in TERMINAL:
            raise AssertionError(f"{stage} never InProgress: {job['status']} {job['statusDetails']}")
        time.sleep(0.01)


def error_of(call: Callable[..., Any], **kwargs: Any) -> tuple[str, str]:
    with pytest.raises(ClientError) as exc:
        call(**kwargs)
    return exc.value.response["Error"]["Code"], exc.value.response["Error"]["Message"]


def read_csv(s3, bucket: str, arn: str, name: str) -> list[dict[str, str]]:
    key = f"customization/model-customization-job-{arn.rsplit('/', 1)[-1]}/{name}"
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    return list(csv.DictReader(io.StringIO((body if isinstance(body, bytes) else body.read()).decode())))


def content(response: dict[str, Any]) -> dict[str, Any]:
    """A response without its HTTP metadata."""
    return {key: value for key, value in response.items() if key != "ResponseMetadata"}


def add_fault(server, **spec: Any) -> dict:
    return control(server, "POST", "/local-bedrock-api/faults", spec)


@pytest.fixture
def train_uri(s3, buckets) -> str:
    return put(s3, buckets[0], "data/train.jsonl", records(10))


# --- a job's life --------------------------------------------------------------------------------------
def test_a_fine_tuning_job_completes_with_a_custom_model_metrics_and_every_sub_status(bedrock, s3, buckets, train_uri):
    arn = create(bedrock, buckets, train_uri=train_uri)

    job = wait_job(bedrock, arn)

    assert job["status"] == "Completed" and "failureMessage" not in job
    assert {stage["status"] for stage in job["statusDetails"].values()} == {"Completed"}
    assert job["hyperParameters"] == {"epochCount": "2", "batchSize": "4", "learningRate": "0.00001",
                                      "learningRateWarmupSteps": "5"}
    assert job["endTime"] >= job["creationTime"]
    model = bedrock.get_custom_model(modelIdentifier=job["outputModelArn"])
    assert model["modelName"] == job["outputModelName"] and model["jobArn"] == arn
    assert model["modelStatus"] == "Active" and model["customizationType"] == "FINE_TUNING"
    assert model["baseModelArn"] == job["baseModelArn"] and model["baseModelArn"].endswith(f"foundation-model/{TITAN}")
    rows = read_csv(s3, buckets[1], arn, TRAINING_CSV)
    assert list(rows[0]) == ["step_number", "epoch_number", "training_loss", "perplexity"]
    assert [int(r["step_number"]) for r in rows] == list(range(6))  # ceil(10 / 4) steps, 2 epochs
    assert [int(r["epoch_number"]) for r in rows] == [1, 1, 1, 2, 2, 2]
    assert float(rows[-1]["training_loss"]) < float(rows[0]["training_loss"])
    assert job["trainingMetrics"]["trainingLoss"] == pytest.approx(float(rows[-1]["training_loss"]))


def test_a_new_job_is_in_progress_validating_with_later_stages_not_started(paced, buckets, train_uri):
    # The paced service (below), whose validation lasts 4 s: on the fast one the whole job takes about
    # 0.15 s, and a loaded run once saw it end before this GetModelCustomizationJob was answered.
    arn = create(paced, buckets, train_uri=train_uri)

    job = paced.get_model_customization_job(jobIdentifier=arn)

    assert job["status"] == "InProgress"
    details = job["statusDetails"]
    assert details["validationDetails"]["status"] == "InProgress"
    assert details["dataProcessingDetails"]["status"] == "NotStarted"
    assert details["trainingDetails"]["status"] == "NotStarted"
    assert "outputModelArn" not in job
    paced.stop_model_customization_job(jobIdentifier=arn)
    wait_job(paced, arn)


def test_validation_data_gives_validation_metrics_and_their_csv(bedrock, s3, buckets, train_uri):
    validation_uri = put(s3, buckets[0], "data/validation.jsonl", records(3, start=100))

    arn = create(bedrock, buckets, train_uri=train_uri, validationDataConfig={"validators": [{"s3Uri": validation_uri}]})
    job = wait_job(bedrock, arn)

    assert job["status"] == "Completed"
    assert job["validationDataConfig"] == {"validators": [{"s3Uri": validation_uri}]}
    [metric] = job["validationMetrics"]
    assert metric["validationLoss"] > 0
    rows = read_csv(s3, buckets[1], arn, VALIDATION_CSV)
    assert list(rows[0]) == ["step_number", "epoch_number", "validation_loss", "perplexity"]
    assert [int(r["epoch_number"]) for r in rows] == [1, 2]
    assert bedrock.get_custom_model(modelIdentifier=job["outputModelArn"])["validationMetrics"] == [metric]


def test_without_validation_data_the_job_reports_no_validators(bedrock, buckets, train_uri):
    job = wait_job(bedrock, create(bedrock, buckets, train_uri=train_uri))

    assert job["validationDataConfig"] == {"validators": []} and "validationMetrics" not in job


def test_continued_pre_training_trains_on_input_records(bedrock, s3, buckets):
    texts = [{"input": f"Report {i}: the harbour crane moved {i} containers before the storm closed the port."}
             for i in range(8)]
    uri = put(s3, buckets[0], "cpt/train.jsonl", texts)

    job = wait_job(bedrock, create(bedrock, buckets, train_uri=uri, customizationType="CONTINUED_PRE_TRAINING"))

    assert job["status"] == "Completed" and job["customizationType"] == "CONTINUED_PRE_TRAINING"


def test_training_data_may_be_a_prefix_of_jsonl_files(bedrock, s3, buckets):
    put(s3, buckets[0], "many/a.jsonl", records(3))
    put(s3, buckets[0], "many/b.jsonl", records(3, start=3))

    job = wait_job(bedrock, create(bedrock, buckets, train_uri=f"s3://{buckets[0]}/many/",
                                   hyperParameters={"epochCount": "1", "batchSize": "1"}))

    assert job["status"] == "Completed"


def test_get_accepts_the_job_name_and_arn(bedrock, buckets, train_uri):
    name = unique("named")
    arn = create(bedrock, buckets, train_uri=train_uri, jobName=name)

    assert bedrock.get_model_customization_job(jobIdentifier=name)["jobArn"] == arn
    assert error_of(bedrock.get_model_customization_job, jobIdentifier="no-such-job")[0] == "ResourceNotFoundException"
    wait_job(bedrock, arn)


# --- creation rules --------------------------------------------------------------------------------------
def test_the_same_client_request_token_returns_the_same_job(bedrock, buckets, train_uri):
    token = uuid.uuid4().hex

    first = create(bedrock, buckets, train_uri=train_uri, clientRequestToken=token)
    again = create(bedrock, buckets, train_uri=train_uri, clientRequestToken=token)

    assert first == again
    assert len(bedrock.list_model_customization_jobs()["modelCustomizationJobSummaries"]) == 1
    assert bedrock.get_model_customization_job(jobIdentifier=first)["clientRequestToken"] == token


def test_a_job_name_is_unique(bedrock, buckets, train_uri):
    name = unique("dup")
    create(bedrock, buckets, train_uri=train_uri, jobName=name)

    code, message = error_of(create, bedrock=bedrock, buckets=buckets, train_uri=train_uri, jobName=name)

    assert code == "ConflictException" and name in message


@pytest.mark.parametrize(("model", "kind"), [
    (TITAN, "DISTILLATION"),
    (NOVA, "CONTINUED_PRE_TRAINING"),
    (CLAUDE, "FINE_TUNING"),
])
def test_a_customization_the_base_model_does_not_support_is_refused(bedrock, buckets, train_uri, model, kind):
    code, message = error_of(create, bedrock=bedrock, buckets=buckets, train_uri=train_uri, model=model,
                             customizationType=kind, hyperParameters={})

    assert code == "ValidationException" and kind in message and model in message
    assert bedrock.list_model_customization_jobs()["modelCustomizationJobSummaries"] == []


def test_an_unknown_base_model_is_refused(bedrock, buckets, train_uri):
    code, message = error_of(create, bedrock=bedrock, buckets=buckets, train_uri=train_uri, model="amazon.nothing-v9")

    assert code == "ValidationException" and "amazon.nothing-v9" in message


@pytest.mark.parametrize(("model", "given", "words"), [
    (TITAN, {"epochs": "2"}, ["epochs", "not supported"]),
    (TITAN, {"epochCount": "11"}, ["epochCount", "between 1 and 10"]),
    (TITAN, {"epochCount": "two"}, ["epochCount", "not a valid integer"]),
    (TITAN, {"batchSize": "65"}, ["batchSize", "between 1 and 64"]),
    (NOVA, {"learningRate": "0.5"}, ["learningRate", "out of range"]),
    (NOVA, {"batchSize": "2"}, ["batchSize", "not supported"]),
])
def test_unknown_or_out_of_range_hyperparameters_are_refused_at_create(bedrock, buckets, train_uri, model, given, words):
    code, message = error_of(create, bedrock=bedrock, buckets=buckets, train_uri=train_uri, model=model,
                             hyperParameters=given)

    assert code == "ValidationException"
    assert all(word in message for word in words), message


def test_defaults_fill_in_hyperparameters_not_given(bedrock, buckets, train_uri):
    arn = create(bedrock, buckets, train_uri=train_uri, model=NOVA, hyperParameters={"epochCount": "1"})

    job = bedrock.get_model_customization_job(jobIdentifier=arn)

    assert job["hyperParameters"] == {"epochCount": "1", "learningRate": "0.00001", "learningRateWarmupSteps": "10"}
    wait_job(bedrock, arn)


# --- data validation ---------------------------------------------------------------------------------------
BAD_DATA = {
    "not JSON": (jsonl(records(2)) + b"{not json\n" + jsonl(records(3)), "Line 3 of", "is not valid JSON"),
    "not an object": (jsonl(records(4)) + b"[1, 2]\n", "Line 5 of", "not a JSON object"),
    "pre-training shape": (jsonl(records(4)) + jsonl([{"input": "some text"}]), "Line 5 of", 'no "prompt" field'),
    "empty completion": (jsonl(records(1)) + jsonl([{"prompt": "p", "completion": "  "}]), "Line 2 of", '"completion" is empty'),
    "not a string": (jsonl([{"prompt": "p", "completion": 5}]), "Line 1 of", "must be a string"),
    "extra field": (jsonl(records(4) + [{"prompt": "p", "completion": "c", "id": "7"}]), "Line 5 of", 'the field "id"'),
    "too few records": (jsonl(records(3)), "3 records", "minimum of 4"),
    "too many records": (jsonl(records(61)), "61 training and validation records", "maximum of 60"),
    "over the token limit": (jsonl(records(4) + [{"prompt": "word " * 2100, "completion": "c"}]), "Line 5 of",
                             "over the limit of 2000 tokens"),
    "empty file": (b"", "is empty", "train.jsonl"),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_training_data_fails_the_job_in_validation_naming_file_and_line(bedrock, s3, buckets, case):
    body, *expected = BAD_DATA[case]
    uri = put(s3, buckets[0], "bad/train.jsonl", body)

    job = wait_job(bedrock, create(bedrock, buckets, train_uri=uri))

    assert job["status"] == "Failed"
    assert all(text in job["failureMessage"] for text in expected), job["failureMessage"]
    assert job["statusDetails"]["validationDetails"]["status"] == "Failed"
    assert job["statusDetails"]["trainingDetails"]["status"] == "NotStarted"
    assert "outputModelArn" not in job
    assert bedrock.list_custom_models()["modelSummaries"] == []


def test_pre_training_data_must_hold_input_records(bedrock, s3, buckets, train_uri):
    job = wait_job(bedrock, create(bedrock, buckets, train_uri=train_uri, customizationType="CONTINUED_PRE_TRAINING"))

    assert job["status"] == "Failed" and 'Line 1 of' in job["failureMessage"] and 'no "input" field' in job["failureMessage"]


def test_missing_training_data_fails_the_job(bedrock, buckets):
    uri = f"s3://{buckets[0]}/nothing/here.jsonl"

    job = wait_job(bedrock, create(bedrock, buckets, train_uri=uri))

    assert job["status"] == "Failed" and uri in job["failureMessage"] and "No training data" in job["failureMessage"]


def test_too_many_validation_records_fail_the_job(bedrock, s3, buckets, train_uri):
    validation_uri = put(s3, buckets[0], "data/big-validation.jsonl", records(21))

    job = wait_job(bedrock, create(bedrock, buckets, train_uri=train_uri,
                                   validationDataConfig={"validators": [{"s3Uri": validation_uri}]}))

    assert job["status"] == "Failed" and "maximum of 20 validation records" in job["failureMessage"]


def test_a_missing_output_bucket_fails_the_job(bedrock, buckets, train_uri):
    job = wait_job(bedrock, create(bedrock, buckets, train_uri=train_uri,
                                   outputDataConfig={"s3Uri": f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/out/"}))

    assert job["status"] == "Failed" and "output S3 bucket" in job["failureMessage"]


# --- listing -------------------------------------------------------------------------------------------------
def test_list_filters_sorts_and_pages(bedrock, s3, buckets, train_uri):
    before = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
    bad_uri = put(s3, buckets[0], "bad/list.jsonl", b"nope\n")
    arns = [create(bedrock, buckets, train_uri=train_uri, jobName=f"listed-{i}") for i in range(3)]
    failed = create(bedrock, buckets, train_uri=bad_uri, jobName="other-0")
    for arn in [*arns, failed]:
        wait_job(bedrock, arn)

    def names(**params: Any) -> list[str]:
        return [j["jobName"] for j in bedrock.list_model_customization_jobs(**params)["modelCustomizationJobSummaries"]]

    assert names(nameContains="listed", sortOrder="Ascending") == ["listed-0", "listed-1", "listed-2"]
    assert names(nameContains="listed", sortBy="CreationTime", sortOrder="Descending") == ["listed-2", "listed-1", "listed-0"]
    assert names(statusEquals="Failed") == ["other-0"]
    assert names(creationTimeAfter=before, nameContains="other") == ["other-0"]
    assert names(creationTimeBefore=before) == []
    first = bedrock.list_model_customization_jobs(maxResults=3, sortOrder="Ascending")
    rest = bedrock.list_model_customization_jobs(maxResults=3, sortOrder="Ascending", nextToken=first["nextToken"])
    assert [j["jobName"] for j in first["modelCustomizationJobSummaries"] + rest["modelCustomizationJobSummaries"]] == \
           ["listed-0", "listed-1", "listed-2", "other-0"]
    assert "nextToken" not in rest
    summary = first["modelCustomizationJobSummaries"][0]
    assert summary["status"] == "Completed" and summary["customModelArn"].rsplit("/", 1)[-1]
    assert summary["customizationType"] == "FINE_TUNING"


def test_a_bad_next_token_is_refused(bedrock):
    assert error_of(bedrock.list_model_customization_jobs, nextToken="bad!")[0] == "ValidationException"


# --- custom models -------------------------------------------------------------------------------------------
@pytest.fixture
def two_models(bedrock, s3, buckets, train_uri) -> list[dict[str, Any]]:
    arns = [create(bedrock, buckets, train_uri=train_uri, customModelName=f"shelf-{i}-{uuid.uuid4().hex[:6]}",
                   model=model, hyperParameters={"epochCount": "1"}) for i, model in enumerate([TITAN, NOVA])]
    return [bedrock.get_custom_model(modelIdentifier=wait_job(bedrock, arn)["outputModelArn"]) for arn in arns]


def test_custom_models_are_listed_filtered_and_paged(bedrock, two_models):
    titan, nova = two_models

    def arns(**params: Any) -> list[str]:
        return [m["modelArn"] for m in bedrock.list_custom_models(**params)["modelSummaries"]]

    assert arns(sortOrder="Ascending") == [titan["modelArn"], nova["modelArn"]]
    assert arns(baseModelArnEquals=nova["baseModelArn"]) == [nova["modelArn"]]
    assert arns(foundationModelArnEquals=titan["baseModelArn"]) == [titan["modelArn"]]
    assert arns(nameContains="shelf-1") == [nova["modelArn"]]
    assert arns(modelStatus="Active", sortOrder="Ascending") == [titan["modelArn"], nova["modelArn"]]
    assert arns(isOwned=False) == []
    page = bedrock.list_custom_models(maxResults=1, sortOrder="Ascending")
    assert [m["modelArn"] for m in page["modelSummaries"]] == [titan["modelArn"]]
    assert arns(maxResults=1, sortOrder="Ascending", nextToken=page["nextToken"]) == [nova["modelArn"]]
    [summary] = bedrock.list_custom_models(nameContains="shelf-0")["modelSummaries"]
    assert summary["baseModelName"] == TITAN and summary["ownerAccountId"] == "123456789012"


def test_a_custom_model_is_found_by_name_and_deleted(bedrock, two_models):
    titan, _ = two_models

    assert bedrock.get_custom_model(modelIdentifier=titan["modelName"])["modelArn"] == titan["modelArn"]
    bedrock.delete_custom_model(modelIdentifier=titan["modelArn"])

    assert error_of(bedrock.get_custom_model, modelIdentifier=titan["modelArn"])[0] == "ResourceNotFoundException"
    assert error_of(bedrock.delete_custom_model, modelIdentifier=titan["modelArn"])[0] == "ResourceNotFoundException"
    assert len(bedrock.list_custom_models()["modelSummaries"]) == 1


# --- events ----------------------------------------------------------------------------------------------
@pytest.fixture
def customization_events(driver) -> str:
    """An SQS queue fed by an EventBridge rule on Bedrock's customization job events."""
    yield from events_queue(driver, unique("customization-events"), "Model Customization Job State Change")


def received(driver, url: str, job_arn: str, until: str, timeout: float = 20) -> list[dict[str, Any]]:
    return events_until(driver.client("sqs"), url, job_arn, until, arn_field="jobArn", status_field="jobStatus",
                        timeout=timeout)


def test_every_status_change_reaches_an_sqs_queue_through_a_rule(bedrock, driver, buckets, train_uri, customization_events):
    arn = create(bedrock, buckets, train_uri=train_uri, jobName=unique("evented"))

    events = received(driver, customization_events, arn, until="Completed")

    assert [e["detail"]["jobStatus"] for e in events] == ["InProgress", "Completed"]
    first, last = events
    assert first["source"] == "aws.bedrock" and first["detail-type"] == "Model Customization Job State Change"
    assert first["resources"] == [arn]
    assert {"version", "jobName", "jobArn", "outputModelName", "roleArn", "jobStatus", "failureMessage",
            "creationTime", "lastModifiedTime", "baseModelArn", "hyperParameters", "trainingDataConfig",
            "validationDataConfig", "outputDataConfig"} <= set(first["detail"])
    assert "outputModelArn" not in first["detail"]
    job = bedrock.get_model_customization_job(jobIdentifier=arn)
    assert last["detail"]["outputModelArn"] == job["outputModelArn"] and "endTime" in last["detail"]


def test_a_failed_job_event_carries_its_failure_message(bedrock, driver, buckets, customization_events):
    arn = create(bedrock, buckets, train_uri=f"s3://{buckets[0]}/missing.jsonl")

    events = received(driver, customization_events, arn, until="Failed")

    assert "No training data" in events[-1]["detail"]["failureMessage"]


# --- faults ----------------------------------------------------------------------------------------------
def test_a_failure_fault_fails_the_job_part_way_through_training_with_its_message(bedrock, bedrock_server, s3,
                                                                                   buckets, train_uri):
    add_fault(bedrock_server, job_name="doomed-*", training_outcome="Failed", training_after_fraction=0.5,
              failure_message="GPU fell over")

    arn = create(bedrock, buckets, train_uri=train_uri, jobName=unique("doomed"),
                 hyperParameters={"epochCount": "4", "batchSize": "1"})
    job = wait_job(bedrock, arn)

    assert job["status"] == "Failed" and job["failureMessage"] == "GPU fell over"
    assert job["statusDetails"]["trainingDetails"]["status"] == "Failed"
    assert job["statusDetails"]["validationDetails"]["status"] == "Completed"
    assert len(read_csv(s3, buckets[1], arn, TRAINING_CSV)) == 20  # half of 10 records x 4 epochs
    assert bedrock.list_custom_models()["modelSummaries"] == []


def test_a_stop_fault_stops_the_job_part_way_through_training(bedrock, bedrock_server, buckets, train_uri):
    add_fault(bedrock_server, model_id=TITAN, training_outcome="Stopped", training_after_fraction=0.3)

    job = wait_job(bedrock, create(bedrock, buckets, train_uri=train_uri))

    assert job["status"] == "Stopped" and job["statusDetails"]["trainingDetails"]["status"] == "Stopped"
    assert "outputModelArn" not in job


def test_a_diverging_job_ends_with_a_higher_loss_than_it_started(bedrock, bedrock_server, s3, buckets, train_uri):
    add_fault(bedrock_server, model_id=TITAN, training_diverges=True)

    arn = create(bedrock, buckets, train_uri=train_uri)
    job = wait_job(bedrock, arn)

    rows = read_csv(s3, buckets[1], arn, TRAINING_CSV)
    assert job["status"] == "Completed"
    assert float(rows[-1]["training_loss"]) > 2 * float(rows[0]["training_loss"])


def test_faults_apply_only_to_the_jobs_they_name(bedrock, bedrock_server, buckets, train_uri):
    add_fault(bedrock_server, job_name="doomed-*", training_outcome="Failed")

    assert wait_job(bedrock, create(bedrock, buckets, train_uri=train_uri))["status"] == "Completed"


def test_throttled_creates_are_refused_until_the_fault_is_spent(bedrock, bedrock_server, buckets, train_uri):
    add_fault(bedrock_server, model_id=TITAN, throttle_customization_creates=2)

    assert error_of(create, bedrock=bedrock, buckets=buckets, train_uri=train_uri)[0] == "ThrottlingException"
    assert error_of(create, bedrock=bedrock, buckets=buckets, train_uri=train_uri)[0] == "ThrottlingException"
    arn = create(bedrock, buckets, train_uri=train_uri)

    assert len(bedrock.list_model_customization_jobs()["modelCustomizationJobSummaries"]) == 1
    wait_job(bedrock, arn)


# --- stopping ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def paced_server(moto, logs_dir, tmp_path_factory):
    """A service whose first two sub-statuses take four seconds each and whose steps take 50 ms, so a
    stop lands in the stage a test chooses. One second was missed once by a CI run's polling under
    load (no GetModelCustomizationJob answered while data processing was InProgress); with two, a
    loaded machine saw a poll take 1.4 s and then the stop 0.3 s, 1.7 s of the stage's 2."""
    server = start_local_bedrock(logs_dir, aws_endpoint=moto.url, env={
        **TEST_LIMITS,
        "LOCAL_BEDROCK_HOME": str(tmp_path_factory.mktemp("paced-home")),
        "LOCAL_BEDROCK_CUSTOMIZATION_VALIDATION_SECONDS": "4",
        "LOCAL_BEDROCK_CUSTOMIZATION_DATA_PROCESSING_SECONDS": "4",
        "LOCAL_BEDROCK_CUSTOMIZATION_SECONDS_PER_STEP": "0.05",
    })
    yield server
    server.stop()


@pytest.fixture
def paced(driver, paced_server):
    control(paced_server, "POST", "/local-bedrock-api/reset")
    return driver.client("bedrock", paced_server.url)


@pytest.mark.parametrize("stage", ["validationDetails", "dataProcessingDetails", "trainingDetails"])
def test_a_job_stops_in_any_sub_status(paced, driver, buckets, train_uri, customization_events, stage):
    arn = create(paced, buckets, train_uri=train_uri, hyperParameters={"epochCount": "10", "batchSize": "1"})
    wait_stage(paced, arn, stage)

    paced.stop_model_customization_job(jobIdentifier=arn)
    job = wait_job(paced, arn)

    assert job["status"] == "Stopped"
    assert job["statusDetails"][stage]["status"] == "Stopped"
    later = list(job["statusDetails"])[list(job["statusDetails"]).index(stage) + 1:]
    assert all(job["statusDetails"][name]["status"] == "NotStarted" for name in later)
    assert paced.list_custom_models()["modelSummaries"] == []
    statuses = [e["detail"]["jobStatus"] for e in received(driver, customization_events, arn, until="Stopped")]
    assert statuses == ["InProgress", "Stopping", "Stopped"]


def test_a_custom_model_name_is_unique_among_models_and_jobs_in_progress(paced, buckets, train_uri):
    name = unique("model")
    arn = create(paced, buckets, train_uri=train_uri, customModelName=name)

    assert error_of(create, bedrock=paced, buckets=buckets, train_uri=train_uri, customModelName=name)[0] == "ConflictException"
    assert paced.get_model_customization_job(jobIdentifier=arn)["status"] == "InProgress"
    assert wait_job(paced, arn)["status"] == "Completed"
    assert error_of(create, bedrock=paced, buckets=buckets, train_uri=train_uri, customModelName=name)[0] == "ConflictException"


def test_a_failed_job_frees_its_custom_model_name(bedrock, s3, buckets):
    name = unique("model")
    bad_uri = put(s3, buckets[0], "bad/free.jsonl", b"nope\n")
    wait_job(bedrock, create(bedrock, buckets, train_uri=bad_uri, customModelName=name))

    good_uri = put(s3, buckets[0], "good/free.jsonl", records(5))
    assert wait_job(bedrock, create(bedrock, buckets, train_uri=good_uri, customModelName=name))["status"] == "Completed"


def test_only_a_job_in_progress_can_be_stopped(bedrock, buckets, train_uri):
    arn = create(bedrock, buckets, train_uri=train_uri)
    wait_job(bedrock, arn)

    assert error_of(bedrock.stop_model_customization_job, jobIdentifier=arn)[0] == "ConflictException"
    assert error_of(bedrock.stop_model_customization_job, jobIdentifier="nope")[0] == "ResourceNotFoundException"


# --- serving a custom model --------------------------------------------------------------------------------
def dialogsum_rows(count: int) -> list[dict[str, str]]:
    if not DIALOGSUM.exists():
        pytest.skip(f"DialogSum rows are not at {DIALOGSUM}")
    with DIALOGSUM.open() as handle:
        return [json.loads(next(handle)) for _ in range(count)]


def provisioned(bedrock, model_arn: str) -> str:
    arn = bedrock.create_provisioned_model_throughput(provisionedModelName=unique("pt"), modelId=model_arn,
                                                      modelUnits=1)["provisionedModelArn"]
    deadline = time.monotonic() + 10
    while bedrock.get_provisioned_model_throughput(provisionedModelId=arn)["status"] != "InService":
        assert time.monotonic() < deadline, "the provisioned throughput never came InService"
        time.sleep(0.05)
    return arn


def titan_answer(runtime, model_id: str, prompt: str) -> str:
    body = json.dumps({"inputText": prompt, "textGenerationConfig": {"maxTokenCount": 200}})
    response = json.loads(runtime.invoke_model(modelId=model_id, body=body)["body"])
    return response["results"][0]["outputText"]


def reworded(prompt: str) -> str:
    """A prompt close to a training prompt but not the same: one dialogue line dropped."""
    lines = prompt.split("\n")
    return "\n".join(lines[:-1]) if len(lines) > 4 else prompt + " Thanks."


def test_a_custom_model_answers_prompts_like_its_training_data_better_than_its_base(bedrock, runtime, s3, buckets):
    rows = dialogsum_rows(12)
    uri = put(s3, buckets[0], "dialogsum/train.jsonl", rows)
    job = wait_job(bedrock, create(bedrock, buckets, train_uri=uri))
    pt = provisioned(bedrock, job["outputModelArn"])

    custom = [titan_answer(runtime, pt, reworded(row["prompt"])) for row in rows]
    base = [titan_answer(runtime, TITAN, reworded(row["prompt"])) for row in rows]

    references = [row["completion"] for row in rows]
    assert sum(a == r for a, r in zip(custom, references)) >= 10
    assert sum(a == r for a, r in zip(base, references)) == 0


def test_a_learn_nothing_custom_model_answers_exactly_as_its_base(bedrock, bedrock_server, runtime, s3, buckets):
    rows = dialogsum_rows(6)
    add_fault(bedrock_server, model_id=TITAN, learn_nothing=True)
    uri = put(s3, buckets[0], "dialogsum/train.jsonl", rows)
    job = wait_job(bedrock, create(bedrock, buckets, train_uri=uri))
    pt = provisioned(bedrock, job["outputModelArn"])

    for row in rows:
        assert titan_answer(runtime, pt, row["prompt"]) == titan_answer(runtime, TITAN, row["prompt"])


def test_a_custom_model_in_use_by_a_provisioned_throughput_cannot_be_deleted(bedrock, buckets, train_uri):
    job = wait_job(bedrock, create(bedrock, buckets, train_uri=train_uri))
    pt = provisioned(bedrock, job["outputModelArn"])

    code, message = error_of(bedrock.delete_custom_model, modelIdentifier=job["outputModelArn"])

    assert code == "ConflictException" and pt in message
    bedrock.delete_provisioned_model_throughput(provisionedModelId=pt)
    bedrock.delete_custom_model(modelIdentifier=job["outputModelArn"])


# --- state across restarts ----------------------------------------------------------------------------------
def test_jobs_and_models_survive_a_restart_unfinished_jobs_resume_and_a_reset_forgets_them(
        moto, logs_dir, tmp_path, driver, s3, buckets):
    home = tmp_path / "home"
    # Batch jobs wait 30 s in Scheduled and training steps take 50 ms, so both are unfinished at the restart.
    env = {**TEST_LIMITS, "LOCAL_BEDROCK_HOME": str(home), "LOCAL_BEDROCK_DELAY_SCHEDULED": "30",
           "LOCAL_BEDROCK_CUSTOMIZATION_SECONDS_PER_STEP": "0.05"}
    train_uri = put(s3, buckets[0], "restart/train.jsonl", records(10))
    batch_uri = put(s3, buckets[0], "restart/batch.jsonl", jsonl(claude_record(i) for i in range(100)))
    server = start_local_bedrock(logs_dir, aws_endpoint=moto.url, env=env)
    try:
        bedrock = driver.client("bedrock", server.url)
        done = wait_job(bedrock, create(bedrock, buckets, train_uri=train_uri, hyperParameters={"epochCount": "1"}))
        batch = create_job(bedrock, input_uri=batch_uri, output_bucket=buckets[1])
        unfinished = create(bedrock, buckets, train_uri=train_uri, hyperParameters={"epochCount": "10", "batchSize": "1"})
        wait_stage(bedrock, unfinished, "trainingDetails")
        wait_for(bedrock, batch, {"Scheduled"})
    finally:
        server.stop()

    server = start_local_bedrock(logs_dir, aws_endpoint=moto.url, env={
        **env, "LOCAL_BEDROCK_DELAY_SCHEDULED": "0.05", "LOCAL_BEDROCK_CUSTOMIZATION_SECONDS_PER_STEP": "0.002"})
    try:
        bedrock = driver.client("bedrock", server.url)
        assert content(bedrock.get_model_customization_job(jobIdentifier=done["jobArn"])) == content(done)
        model = bedrock.get_custom_model(modelIdentifier=done["outputModelArn"])
        assert model["trainingMetrics"] == done["trainingMetrics"]
        assert wait_job(bedrock, unfinished)["status"] == "Completed"
        assert len(bedrock.list_custom_models()["modelSummaries"]) == 2
        batch_job = wait_for(bedrock, batch)
        assert batch_job["status"] == "Completed" and batch_job["successRecordCount"] == 100

        control(server, "POST", "/local-bedrock-api/reset")
    finally:
        server.stop()
    saved = {name: json.loads((home / "state" / f"{name}.json").read_text())
             for name in ("batch_jobs", "customization_jobs", "custom_models")}
    assert saved == {"batch_jobs": [], "customization_jobs": [], "custom_models": []}
    assert not (home / "custom-models").exists()
