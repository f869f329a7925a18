"""End to end on the local stack (fast engine): the `customize` kind from spec to verdict, with every
path that must leave no hosting behind checked against the local Bedrock's own lists.

The fast trainer's custom model answers a prompt close to one it trained on with that record's
completion (infra/local_bedrock/engines/fast.py), so the held-out prompts here are the training
dialogues asked differently ("Write a one-line summary of ..."): not the same prompt (the pre-flight
refuses those), but close enough that a model that learned beats its base, and one under the
learn_nothing fault does not.
"""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import boto3
import pytest
import yaml

from tests.e2e.conftest import control, latest_runs, mail_about, wait_until

SAMPLE = Path(__file__).resolve().parents[2] / "infra" / "demo" / "dialogsum_sample.jsonl"
BASE = "amazon.nova-micro-v1:0"
TRAIN, HELD_OUT = 40, 20


def _rows() -> list[dict]:
    return [json.loads(line) for line in SAMPLE.read_text().splitlines()]


def _put(s3, key: str, records: list[dict]) -> str:
    s3.put_object(Bucket="quarry-inputs", Key=key, Body="".join(json.dumps(r) + "\n" for r in records).encode())
    return f"s3://quarry-inputs/{key}"


@pytest.fixture(scope="module")
def data(stack, aws):
    rows = _rows()
    tag = uuid.uuid4().hex[:6]
    train = _put(aws["s3"], f"tuning/{tag}/train.jsonl", rows[:TRAIN])
    held = [{"prompt": r["prompt"].replace("Summarize the following conversation.", "Write a one-line summary of this "
                                           "conversation, please."), "completion": r["completion"]}
            for r in rows[:HELD_OUT]]
    return {"train": train, "held_out": _put(aws["s3"], f"tuning/{tag}/held_out.jsonl", held), "tag": tag, "rows": rows}


def _spec(data: dict, name: str, **changes) -> dict:
    spec = {"name": name, "base_model": BASE, "training_data": data["train"], "hyperparameters": {"epochCount": 1},
            "custom_model_name": f"{name}-{uuid.uuid4().hex[:8]}", "hosting": {"type": "deployment"},
            "gate": {"data": data["held_out"], "metrics": ["rougeL"], "min_effect": 0.05, "max_tokens": 64},
            "budget_usd": 50, "registry": f"tuning-{data['tag']}"}
    spec.update(changes)
    return spec


def _drop(aws, spec: dict) -> str:
    key = f"customizations/{spec['name']}-{uuid.uuid4().hex[:6]}.yaml"
    aws["s3"].put_object(Bucket="quarry-inputs", Key=key, Body=yaml.safe_dump(spec).encode())
    return f"s3://quarry-inputs/{key}"


def _finished(source: str, timeout: float = 180):
    return wait_until(lambda: next((r for r in latest_runs() if r.kind == "customize" and r.source_key.startswith(source)
                                    and r.terminal and r.notified_at), None),
                      timeout=timeout, what=f"a finished customization for {source}")


def _hosting_left(run_id: str) -> list[str]:
    """Every hosting of the run the local Bedrock still has (provisioned or deployed)."""
    bedrock = boto3.client("bedrock")
    name = f"quarry-{run_id}-hosting"
    pts = bedrock.list_provisioned_model_throughputs(nameContains=name)["provisionedModelSummaries"]
    deployments = bedrock.list_custom_model_deployments(nameContains=name)["modelDeploymentSummaries"]
    return [p["provisionedModelArn"] for p in pts] + [d["customModelDeploymentArn"] for d in deployments]


def _customization_jobs(run_id: str) -> list[dict]:
    bedrock = boto3.client("bedrock")
    return bedrock.list_model_customization_jobs(nameContains=run_id)["modelCustomizationJobSummaries"]


@pytest.fixture(scope="module")
def kept(stack, aws, data):
    run = _finished(_drop(aws, _spec(data, "kept", hosting={"type": "provisioned", "model_units": 1})))
    return run


def test_a_good_spec_ends_with_the_model_kept_its_hosting_in_service_and_a_registry_entry(kept, stack):
    import asyncio

    from shared.adapters.aws import async_clients
    from shared.adapters.registry import Registry
    from shared.settings import Settings

    run = kept
    assert run.status == "SUCCEEDED", run.error
    s = run.summary
    assert s["verdict"] == "gate_passed" and s["kept"]
    gate = s["gate"]
    assert gate["difference"] > 0.05 and gate["ci"][0] > 0.05 and gate["n"] == HELD_OUT
    [arn] = _hosting_left(run.run_id)
    assert boto3.client("bedrock").get_provisioned_model_throughput(provisionedModelId=arn)["status"] == "InService"
    assert run.loss_curve and run.loss_curve[-1][1] < run.loss_curve[0][1]

    async def entries():
        settings = Settings()
        async with async_clients(settings, "dynamodb") as clients:
            registry = Registry(clients["dynamodb"], settings.table)
            return await registry.entries(run.customization.registry), await registry.champion(run.customization.registry)

    [entry], champion = asyncio.run(entries())
    assert entry["kept"] and entry["lineage"]["base_model"] == BASE
    assert entry["lineage"]["data_hashes"]["training"] and entry["lineage"]["hyperparameters"]["epochCount"] == "1"
    assert entry["gate"]["passed"] and champion["model_id"] == arn
    mail = mail_about(stack, run.run_id)
    assert "gate passed" in mail["subject"] and arn in mail["body"] and "95% CI" in mail["body"]


def test_quarry_hosting_lists_the_kept_hosting_and_deletes_it(kept, capsys):
    from services.cli.main import main as quarry

    [arn] = _hosting_left(kept.run_id)
    quarry(["hosting", "list"])
    listed = capsys.readouterr().out
    assert arn in listed and "yes" in listed
    quarry(["hosting", "delete", arn])
    assert _hosting_left(kept.run_id) == []


def test_a_custom_model_that_does_not_beat_its_base_ends_with_its_hosting_deleted(stack, aws, data):
    spec = _spec(data, "nothing")
    control(stack, "POST", "/local-bedrock-api/faults", {"model_id": BASE, "job_name": "quarry-*-customization",
                                                          "learn_nothing": True, "times": 1})
    run = _finished(_drop(aws, spec))

    assert run.status == "SUCCEEDED" and run.summary["verdict"] == "gate_not_passed", run.error
    assert not run.summary["kept"] and run.summary["gate"]["ci"][0] <= 0.05
    assert _hosting_left(run.run_id) == []
    assert "hosting deleted" in mail_about(stack, run.run_id)["subject"]


def test_a_failed_job_ends_the_run_with_bedrocks_message_and_no_hosting(stack, aws, data):
    control(stack, "POST", "/local-bedrock-api/faults", {"model_id": BASE, "job_name": "quarry-*-customization",
                                                          "training_outcome": "Failed", "times": 1,
                                                          "failure_message": "Training diverged (injected)"})
    run = _finished(_drop(aws, _spec(data, "failing")))

    assert run.status == "FAILED" and run.summary["verdict"] == "job_failed"
    assert "Training diverged (injected)" in run.error
    assert _hosting_left(run.run_id) == []
    assert "Training diverged (injected)" in mail_about(stack, run.run_id)["body"]


def test_a_stopped_job_ends_the_run_with_no_hosting(stack, aws, data):
    control(stack, "POST", "/local-bedrock-api/faults", {"model_id": BASE, "job_name": "quarry-*-customization",
                                                          "training_outcome": "Stopped", "times": 1})
    run = _finished(_drop(aws, _spec(data, "stopping")))

    assert run.summary["verdict"] == "job_stopped" and _hosting_left(run.run_id) == []


def test_a_provisioned_throughput_that_fails_to_come_up_is_deleted(stack, aws, data):
    control(stack, "POST", "/local-bedrock-api/faults", {"provisioned_name": "quarry-*-hosting",
                                                          "provisioning_outcome": "Failed", "times": 1})
    run = _finished(_drop(aws, _spec(data, "ptfail", hosting={"type": "provisioned", "model_units": 1})))

    assert run.status == "FAILED" and run.summary["verdict"] == "hosting_failed"
    assert _hosting_left(run.run_id) == []


def test_a_cancel_while_the_hosting_comes_up_leaves_no_hosting(stack, aws, data):
    from services.cli.main import main as quarry

    control(stack, "POST", "/local-bedrock-api/faults", {"provisioned_name": "quarry-*-hosting",
                                                          "provisioning_seconds": 30, "times": 1})
    source = _drop(aws, _spec(data, "cancelled"))
    run = wait_until(lambda: next((r for r in latest_runs() if r.source_key.startswith(source)), None), timeout=60,
                     what="the run")
    wait_until(lambda: _hosting_left(run.run_id), timeout=120, what="its hosting to be requested")
    quarry(["cancel", run.run_id])
    run = _finished(source)

    assert run.status == "CANCELLED" and run.summary["verdict"] == "cancelled"
    assert _hosting_left(run.run_id) == []


def test_bad_data_gets_a_line_level_report_and_no_job(stack, aws, data):
    rows = data["rows"][:12]
    bad = [rows[0], {"prompt": "", "completion": "x"}, {"prompt": "hi"}, rows[3], rows[0],
           {"prompt": "a", "completion": "b", "extra": 1}] + rows[5:12]
    train = _put(aws["s3"], f"tuning/{data['tag']}/bad.jsonl", bad)
    run = _finished(_drop(aws, _spec(data, "baddata", training_data=train)), timeout=60)

    assert run.status == "FAILED" and run.summary["verdict"] == "validation_failed"
    text = run.preflight["text"]
    assert f"{train}, line 2, field 'prompt': empty" in text
    assert f"{train}, line 3, field 'completion': missing" in text
    assert f"{train}, line 5: an exact duplicate of line 1" in text
    assert f"{train}, line 6, field 'extra'" in text
    assert _customization_jobs(run.run_id) == []
    assert "line 3" in mail_about(stack, run.run_id)["body"]


def test_a_spec_over_budget_is_refused_before_any_job(stack, aws, data):
    run = _finished(_drop(aws, _spec(data, "pricey", budget_usd=0.5, hosting={"type": "provisioned"})), timeout=60)

    assert run.status == "FAILED" and run.summary["verdict"] == "budget_refused"
    assert "over the budget" in run.error and _customization_jobs(run.run_id) == []
    assert "Cost estimate" in mail_about(stack, run.run_id)["body"]
