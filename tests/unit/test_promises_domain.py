"""Domain rules of issue 10: prices, the spec's new fields, deadlines and stuck jobs, output schemas."""
from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from shared.domain.deadlines import BadDeadline, batch_cutoff, deadline_at, is_stuck, parse_deadline
from shared.domain.output_schema import OutputValidator, extract_json, follow_up_body, typed_arrays
from shared.domain.prices import PRICES, PRICES_TAKEN, cost_usd, price_of
from shared.domain.spec import SpecOverrides, resolve_spec
from shared.domain.summary import batch_cost_usd
from shared.errors import InvalidRunSpec

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
T0 = dt.datetime(2025, 7, 1, 12, 0, tzinfo=dt.timezone.utc)


# --- prices ----------------------------------------------------------------------------------------
def test_every_price_row_has_batch_at_half_the_on_demand_price_and_the_table_says_when_it_was_taken():
    assert dt.date.fromisoformat(PRICES_TAKEN)
    for model_id, price in PRICES.items():
        assert price.batch_in == pytest.approx(price.on_demand_in / 2), model_id
        assert price.batch_out == pytest.approx(price.on_demand_out / 2), model_id


def test_a_price_is_found_by_id_arn_or_inference_profile_and_an_unknown_model_has_none():
    arn = f"arn:aws:bedrock:us-east-1::foundation-model/{HAIKU}"
    assert price_of(HAIKU) is price_of(arn) is price_of(f"us.{HAIKU}") is PRICES[HAIKU]
    assert price_of("anthropic.claude-9") is None and cost_usd("anthropic.claude-9", 10, 10, "batch") is None


def test_the_summary_cost_is_the_tables_batch_price():
    # 1M in at 0.00025/1k and 1M out at 0.00125/1k on demand: 1.50 USD; batch half of it.
    assert cost_usd(HAIKU, 1_000_000, 1_000_000, "on_demand") == pytest.approx(1.5)
    assert batch_cost_usd(HAIKU, 1_000_000, 1_000_000) == pytest.approx(0.75)


# --- the spec ----------------------------------------------------------------------------------------
def spec(**fields):
    return resolve_spec({"model_id": HAIKU, "template": "{{ text }}"}, SpecOverrides(**fields), where="the test")


def test_the_cache_defaults_to_reuse_at_temperature_zero_and_off_otherwise_unless_the_spec_says():
    assert spec(params={"temperature": 0}).cache == "reuse"
    assert spec(params={"temperature": 0.7}).cache == "off"
    assert spec().cache == "off"
    assert spec(params={"temperature": 0}, cache="off").cache == "off"


def test_a_bad_deadline_budget_or_schema_is_refused_naming_the_field():
    with pytest.raises(InvalidRunSpec, match="deadline: .*neither a time"):
        spec(deadline="by friday")
    with pytest.raises(InvalidRunSpec, match="deadline: .*no time zone"):
        spec(deadline="2025-07-01T17:00:00")
    with pytest.raises(InvalidRunSpec, match="budget_usd"):
        spec(budget_usd=0)
    with pytest.raises(InvalidRunSpec, match="output_schema: .*not a valid JSON Schema at properties/n/type"):
        spec(output_schema={"type": "object", "properties": {"n": {"type": "integr"}}})


# --- deadlines -----------------------------------------------------------------------------------------
def test_a_deadline_is_a_zoned_time_or_a_duration_from_the_runs_start():
    assert deadline_at("1h30m", T0) == T0 + dt.timedelta(minutes=90)
    assert deadline_at("45s", T0) == T0 + dt.timedelta(seconds=45)
    assert deadline_at("2025-07-01T17:00:00Z", T0) == dt.datetime(2025, 7, 1, 17, tzinfo=dt.timezone.utc)
    with pytest.raises(BadDeadline):
        parse_deadline("0m")


def test_the_cutoff_leaves_the_pending_records_time_on_demand_and_a_margin():
    cutoff = batch_cutoff(deadline=T0 + dt.timedelta(hours=2), started=T0, pending=400, latency_s=3.0,
                          concurrency=4, margin_s=300)
    assert cutoff.on_demand_s == 300  # 100 waves of 4 calls, 3 s each
    assert cutoff.at == T0 + dt.timedelta(hours=2) - dt.timedelta(seconds=600)


def test_a_short_deadlines_margin_is_at_most_a_tenth_of_its_window():
    cutoff = batch_cutoff(deadline=T0 + dt.timedelta(seconds=60), started=T0, pending=0, latency_s=1.0,
                          concurrency=4, margin_s=300)
    assert cutoff.margin_s == 6 and cutoff.at == T0 + dt.timedelta(seconds=54)


def test_a_job_is_stuck_only_with_records_pending_and_no_progress_for_the_configured_time():
    later = T0 + dt.timedelta(seconds=61)
    assert is_stuck(processed=40, total=100, progressed_at=T0, now=later, stuck_after_s=60)
    assert not is_stuck(processed=40, total=100, progressed_at=T0, now=later, stuck_after_s=120)
    assert not is_stuck(processed=100, total=100, progressed_at=T0, now=later, stuck_after_s=60)
    assert not is_stuck(processed=0, total=0, progressed_at=T0, now=later, stuck_after_s=60)


# --- output schemas ---------------------------------------------------------------------------------------
SCHEMA = {"type": "object", "properties": {"sentiment": {"type": "string", "enum": ["pos", "neg"]},
                                            "score": {"type": "number"}, "n": {"type": "integer"},
                                            "ok": {"type": "boolean"}, "tags": {"type": "array"}},
          "required": ["sentiment", "score"]}


def test_the_first_json_object_is_found_after_prose_and_inside_a_fence():
    assert extract_json('Sure! ```json\n{"a": {"b": 1}}\n``` hope it helps {"c": 2}', "first_object") == ({"a": {"b": 1}}, None)
    assert extract_json("{not json} then {\"a\": 1}", "first_object") == ({"a": 1}, None)
    assert extract_json("no object here", "first_object")[1].endswith("holds no JSON object")
    assert extract_json('Here: {"a": 1}', "whole")[1].startswith("output does not match the output_schema: the output is not JSON")


def test_a_valid_output_gives_its_value_and_an_invalid_one_says_where_and_why():
    validator = OutputValidator(SCHEMA, "first_object")
    assert validator.check('{"sentiment": "pos", "score": 0.9}') == ({"sentiment": "pos", "score": 0.9}, None)
    value, problem = validator.check('{"sentiment": "meh", "score": 1}')
    assert value is None and "at sentiment" in problem and "'meh' is not one of" in problem
    assert "'score' is a required property" in validator.check('{"sentiment": "neg"}')[1]


def test_typed_columns_keep_each_propertys_type_and_others_are_json_text():
    validator = OutputValidator(SCHEMA, "whole")
    arrays = typed_arrays([{"sentiment": "pos", "score": 1, "n": 3, "ok": True, "tags": ["a"]}, None], validator.fields)
    assert [f.type for f in validator.fields] == [pa.string(), pa.float64(), pa.int64(), pa.bool_(), pa.string()]
    assert [a.to_pylist() for a in arrays] == [["pos", None], [1.0, None], [3, None], [True, None], ['["a"]', None]]


def test_the_follow_up_turn_carries_the_previous_answer_and_the_instruction():
    body = {"anthropic_version": "x", "max_tokens": 10, "messages": [{"role": "user", "content": "q"}]}
    again = follow_up_body("anthropic", False, body, "bad", "fix it")
    assert again["messages"][1:] == [{"role": "assistant", "content": "bad"}, {"role": "user", "content": "fix it"}]
    assert body["messages"] == [{"role": "user", "content": "q"}], "the original body is not changed"
    assert follow_up_body("llama", False, {"prompt": "Q: "}, "bad", "fix it")["prompt"] == "Q: bad\n\nfix it\n"
