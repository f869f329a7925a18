"""The customization spec and its pre-flight: errors name the field path; every bad record is
reported with its file, line and field; duplicates, overlaps, legacy bases and budgets are caught;
Quarry's copy of Bedrock's hyperparameter table is the local Bedrock's."""
from __future__ import annotations

import orjson
import pytest

from infra.local_bedrock import hyperparameters as local_bedrock
from shared.dataplane.customization_data import preflight
from shared.domain.customization import HYPERPARAMETERS, parse_customization
from shared.errors import InvalidRunSpec

TRAIN, VALID, HELD = "s3://quarry-inputs/t.jsonl", "s3://quarry-inputs/v.jsonl", "s3://quarry-inputs/h.jsonl"


def spec(**changes):
    data = {"base_model": "amazon.nova-micro-v1:0", "training_data": TRAIN, "custom_model_name": "m1",
            "budget_usd": 100, "hosting": {"type": "deployment"}, "gate": {"data": HELD, "metrics": ["rougeL"]}}
    data.update(changes)
    return parse_customization(data, where="in the test")


def records(n: int, start: int = 0) -> list[bytes]:
    return [orjson.dumps({"prompt": f"question number {i} about topic {i}", "completion": f"answer {i}"})
            for i in range(start, start + n)]


def files(**by_uri):
    return lambda uri: by_uri.get(uri)


def test_the_hyperparameter_tables_are_the_local_bedrocks():
    assert {family: [(p.name, p.kind, p.minimum, p.maximum, p.default) for p in table]
            for family, table in HYPERPARAMETERS.items()} == \
           {family: [(p.name, p.kind, p.minimum, p.maximum, p.default) for p in table]
            for family, table in local_bedrock.TABLES.items()}


def test_a_spec_error_names_every_bad_field_path():
    with pytest.raises(InvalidRunSpec) as error:
        parse_customization({"base_model": "amazon.nova-micro-v1:0", "training_data": "data.jsonl",
                             "budget_usd": 0, "hosting": {"type": "pt"}}, where="in x.yaml")
    message = str(error.value)
    assert message.startswith("invalid customization spec in x.yaml: ")
    for path in ("training_data: String should match", "custom_model_name: required", "hosting.type: must be one of",
                 "budget_usd: Input should be greater than 0"):
        assert path in message


def test_an_unknown_field_is_named_with_its_path():
    with pytest.raises(InvalidRunSpec, match="hosting: unknown field"):
        spec(hosting={"type": "deployment", "units": 2})


def test_a_deployment_of_a_base_that_has_none_is_refused():
    with pytest.raises(InvalidRunSpec, match="hosting.type: custom models of amazon.titan-text-lite-v1 cannot be deployed"):
        spec(base_model="amazon.titan-text-lite-v1")


def test_every_bad_record_is_reported_with_file_line_and_field():
    bad = [records(1)[0], b'{"prompt": "", "completion": "x"}', b"not json", b'{"prompt": "p"}',
           b'{"prompt": "a <|endoftext|>", "completion": "b"}', b'{"prompt": "a", "completion": "b", "x": 1}'] + records(8, 1)
    report = preflight(spec(), lines=files(**{TRAIN: bad, HELD: records(3, 100)}), lifecycle="ACTIVE", gate_hours=1)

    found = {(p.line, p.field) for p in report.errors}
    assert {(2, "prompt"), (3, None), (4, "completion"), (5, "prompt"), (6, "x")} <= found
    assert all(p.file == TRAIN for p in report.errors) and not report.ok


def test_duplicates_are_warned_and_held_out_overlap_with_training_is_an_error():
    train = records(10) + [records(1)[0]]
    held = records(2, 5) + records(2, 200)
    report = preflight(spec(), lines=files(**{TRAIN: train, HELD: held}), lifecycle="ACTIVE", gate_hours=1)

    assert report.files["training"].duplicates == 1
    assert report.overlap["held_out_in_training"] == 2 and not report.ok
    assert [(p.line, p.severity) for p in report.problems if p.file == HELD] == [(1, "error"), (2, "error")]


def test_a_legacy_base_model_and_bad_hyperparameters_are_refused_with_the_defaults_shown():
    report = preflight(spec(hyperparameters={"epochCount": "9", "warmup": "1"}),
                       lines=files(**{TRAIN: records(10), HELD: records(2, 50)}), lifecycle="LEGACY", gate_hours=1)

    fields = {p.field for p in report.errors}
    assert {"base_model", "hyperparameters.epochCount", "hyperparameters.warmup"} <= fields
    assert "learningRate" in report.defaults_filled and report.hyperparameters["learningRate"] == "0.00001"


def test_a_cost_over_the_budget_is_refused_with_the_estimate():
    report = preflight(spec(budget_usd=1, hosting={"type": "provisioned", "model_units": 1}),
                       lines=files(**{TRAIN: records(10), HELD: records(2, 50)}), lifecycle="ACTIVE", gate_hours=2)

    assert report.over_budget and not report.ok
    assert report.cost["hosting_gate_usd"] == pytest.approx(29.0) and report.cost["total_usd"] > 1
    assert "Cost estimate" in report.as_text()


def test_a_missing_file_is_one_error_naming_it():
    report = preflight(spec(), lines=files(**{HELD: records(2)}), lifecycle="ACTIVE", gate_hours=1)

    assert [p.file for p in report.errors] == [TRAIN]
