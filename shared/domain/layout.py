"""Where a run's intermediate data lives in the work bucket, and its results in the results bucket.

    s3://<work>/runs/<run>/rows.parquet                      the input rows, for the join
    s3://<work>/runs/<run>/input/chunk-<i>[-retry].jsonl     each job's input file
    s3://<work>/runs/<run>/output/<bedrock job id>/...       Bedrock's output (its own layout)
    s3://<work>/runs/<run>/ondemand/chunk-<i>.jsonl          on-demand results, as Bedrock writes them
    s3://<work>/runs/<run>/cached/chunk-<i>.jsonl            answers from the response cache, the same shape
    s3://<work>/runs/<run>/duplicates.txt                    rows repeating an earlier row's request, and which
    s3://<work>/runs/<run>/schema-retry/chunk-<i>.jsonl      follow-up answers of outputs that missed the schema
    s3://<work>/runs/<run>/dataset.jsonl                     an evaluation's records, as its children read them
    s3://<results>/runs/<run>/results.<fmt>, summary.json    what the user gets
    s3://<results>/runs/<run>/evaluation/...                  an evaluation's records, results.json, report.html
    s3://<results>/cache/<model>/<pair>.json                  the response cache, shared by every run
Chunk file names keep to Bedrock's s3Uri pattern, whatever the input's key looks like.
"""
from __future__ import annotations

from shared.settings import Settings


def run_prefix(settings: Settings, run_id: str) -> str:
    return f"s3://{settings.work_bucket}/runs/{run_id}"


def rows_uri(settings: Settings, run_id: str) -> str:
    return f"{run_prefix(settings, run_id)}/rows.parquet"


def chunk_uri(settings: Settings, run_id: str, index: int) -> str:
    return f"{run_prefix(settings, run_id)}/input/chunk-{index:05d}.jsonl"


def output_prefix(settings: Settings, run_id: str) -> str:
    return f"{run_prefix(settings, run_id)}/output/"


def ondemand_uri(settings: Settings, run_id: str, index: int) -> str:
    return f"{run_prefix(settings, run_id)}/ondemand/chunk-{index:05d}.jsonl"


def result_uri(settings: Settings, run_id: str, fmt: str) -> str:
    return f"s3://{settings.results_bucket}/runs/{run_id}/results.{fmt}"


def cached_uri(settings: Settings, run_id: str, index: int) -> str:
    return f"{run_prefix(settings, run_id)}/cached/chunk-{index:05d}.jsonl"


def duplicates_uri(settings: Settings, run_id: str) -> str:
    """Which rows repeat an earlier row's request (shared/dataplane/duplicates.py)."""
    return f"{run_prefix(settings, run_id)}/duplicates.txt"


def schema_retry_uri(settings: Settings, run_id: str, index: int) -> str:
    """Follow-up answers of outputs that did not match the run's output_schema, as Bedrock writes them."""
    return f"{run_prefix(settings, run_id)}/schema-retry/chunk-{index:05d}.jsonl"


def dataset_uri(settings: Settings, run_id: str) -> str:
    return f"{run_prefix(settings, run_id)}/dataset.jsonl"


def evaluation_prefix(settings: Settings, run_id: str) -> str:
    return f"s3://{settings.results_bucket}/runs/{run_id}/evaluation"
