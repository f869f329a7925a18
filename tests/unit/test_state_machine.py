"""The run/job state machine, Bedrock's statuses, job names and a finished run's outcome."""
from __future__ import annotations

import re

import botocore.session
import pytest

from shared.domain.runs import (
    FROM_BEDROCK, JOB_TERMINAL, RUN_TERMINAL, IllegalTransition, check_job_move, check_run_move, job_key, job_name,
    outcome_of, parse_job_name,
)

RUN_ID = "0123456789abcdef0123456789abcdef"
_BEDROCK = botocore.session.get_session().get_service_model("bedrock")


def bedrock_pattern(shape: str) -> re.Pattern[str]:
    return re.compile(rf"^(?:{_BEDROCK.shape_for(shape).metadata['pattern']})$")


# --- runs ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("current,target", [
    ("PREPARING", "RUNNING"), ("PREPARING", "FINALIZING"), ("PREPARING", "FAILED"), ("PREPARING", "CANCELLING"),
    ("RUNNING", "FINALIZING"), ("RUNNING", "CANCELLING"), ("RUNNING", "FAILED"),
    ("FINALIZING", "SUCCEEDED"), ("FINALIZING", "PARTIAL"), ("FINALIZING", "FAILED"), ("FINALIZING", "CANCELLED"),
    ("CANCELLING", "FINALIZING"), ("CANCELLING", "CANCELLED"),
])
def test_given_a_run_when_it_takes_a_legal_move_then_the_move_is_allowed(current, target):
    check_run_move(current, target)


@pytest.mark.parametrize("current,target", [
    ("PREPARING", "SUCCEEDED"), ("RUNNING", "SUCCEEDED"), ("RUNNING", "PREPARING"), ("CANCELLING", "RUNNING"),
    ("RUNNING", "RUNNING"),
])
def test_given_a_run_when_it_skips_or_reverses_a_step_then_the_move_is_illegal(current, target):
    with pytest.raises(IllegalTransition, match=f"run cannot move from {current} to {target}"):
        check_run_move(current, target)


@pytest.mark.parametrize("terminal", sorted(RUN_TERMINAL))
def test_given_a_finished_run_when_anything_moves_it_then_the_move_is_illegal(terminal):
    for target in ("PREPARING", "RUNNING", "FINALIZING", "CANCELLING", *RUN_TERMINAL):
        with pytest.raises(IllegalTransition):
            check_run_move(terminal, target)


# --- jobs ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("current,target", [
    ("PENDING", "SUBMITTING"), ("PENDING", "CANCELLED"),
    ("SUBMITTING", "SUBMITTED"), ("SUBMITTING", "RUNNING"), ("SUBMITTING", "FAILED"), ("SUBMITTING", "COMPLETED"),
    ("SUBMITTED", "RUNNING"), ("SUBMITTED", "STOPPED"), ("RUNNING", "COMPLETED"), ("RUNNING", "EXPIRED"),
    ("RUNNING", "PARTIAL"),
])
def test_given_a_job_when_it_takes_a_legal_move_then_the_move_is_allowed(current, target):
    check_job_move(current, target)


@pytest.mark.parametrize("current,target", [
    ("PENDING", "SUBMITTED"), ("PENDING", "RUNNING"), ("PENDING", "FAILED"), ("SUBMITTED", "SUBMITTING"),
    ("RUNNING", "SUBMITTED"), ("SUBMITTED", "SUBMITTED"),
])
def test_given_a_job_when_it_skips_or_reverses_a_step_then_the_move_is_illegal(current, target):
    with pytest.raises(IllegalTransition, match=f"job cannot move from {current} to {target}"):
        check_job_move(current, target)


@pytest.mark.parametrize("terminal", sorted(JOB_TERMINAL))
def test_given_a_finished_job_when_anything_moves_it_then_the_move_is_illegal(terminal):
    for target in ("PENDING", "SUBMITTING", "SUBMITTED", "RUNNING", *JOB_TERMINAL):
        with pytest.raises(IllegalTransition):
            check_job_move(terminal, target)


# --- Bedrock statuses ---------------------------------------------------------------------------------
def test_given_botocores_bedrock_model_when_mapping_statuses_then_every_job_status_bedrock_has_is_mapped():
    bedrock_statuses = set(_BEDROCK.shape_for("ModelInvocationJobStatus").enum)

    assert set(FROM_BEDROCK) == bedrock_statuses


@pytest.mark.parametrize("bedrock_status,quarry_status", [
    ("Completed", "COMPLETED"), ("PartiallyCompleted", "PARTIAL"), ("Failed", "FAILED"), ("Stopped", "STOPPED"),
    ("Expired", "EXPIRED"),
])
def test_given_a_finished_bedrock_job_when_mapped_then_the_quarry_job_is_finished_too(bedrock_status, quarry_status):
    assert FROM_BEDROCK[bedrock_status] == quarry_status
    assert quarry_status in JOB_TERMINAL


@pytest.mark.parametrize("bedrock_status", ["Submitted", "Validating", "Scheduled", "InProgress", "Stopping"])
def test_given_an_active_bedrock_job_when_mapped_then_the_quarry_job_still_holds_its_slot(bedrock_status):
    assert FROM_BEDROCK[bedrock_status] in ("SUBMITTED", "RUNNING")


# --- job names ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("index,attempt", [(0, 0), (7, 1), (99999, 1)])
def test_given_a_job_name_when_parsed_then_it_gives_back_its_run_and_job_key(index, attempt):
    key = job_key(index, attempt)

    assert parse_job_name(job_name(RUN_ID, key)) == (RUN_ID, key)


@pytest.mark.parametrize("index,attempt", [(0, 0), (99999, 1)])
def test_given_a_job_name_when_sent_to_bedrock_then_it_fits_the_job_name_and_token_patterns(index, attempt):
    name = job_name(RUN_ID, job_key(index, attempt))

    assert bedrock_pattern("ModelInvocationJobName").match(name)
    assert len(name) <= _BEDROCK.shape_for("ModelInvocationJobName").metadata["max"]
    assert bedrock_pattern("ModelInvocationIdempotencyToken").match(name)


@pytest.mark.parametrize("name", [
    "nightly-embeddings", "quarry-notahexrunid-00000-0", f"quarry-{RUN_ID}-0000-0", f"quarry-{RUN_ID}-00000-0-x",
    f"other-{RUN_ID}-00000-0",
])
def test_given_a_job_quarry_did_not_start_when_its_name_is_parsed_then_it_is_not_ours(name):
    assert parse_job_name(name) is None


# --- outcomes -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("rows,failed,cancelled,outcome", [
    (10, 0, False, "SUCCEEDED"),
    (10, 3, False, "PARTIAL"),
    (10, 10, False, "FAILED"),
    (10, 0, True, "CANCELLED"),
    (10, 10, True, "CANCELLED"),
])
def test_given_row_counts_when_a_run_finishes_then_its_outcome_follows_them(rows, failed, cancelled, outcome):
    assert outcome_of(rows, failed, cancelled) == outcome
