"""Reading a run's outputs back: what failed or went missing, and every record's result by chunk.

Blocking (boto3 + the data plane), run from a worker thread. Memory stays bounded by one chunk's
results at a time: outputs are streamed a few MB at a time, one chunk after another, and the result
file is uploaded while it is written.
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import orjson

from shared.adapters.objects import SyncObjects
from shared.adapters.response_cache import ResponseCache
from shared.dataplane.assemble import (
    AssembleSummary, ChunkResults, SourceResults, assemble, merge_results, parse_output_lines, read_output_blocks,
    source_results_of,
)
from shared.dataplane.prepare import record_id
from shared.dataplane.splitter import Chunk, SplitPlan
from shared.domain import layout
from shared.domain.bodies import Family, family_of
from shared.domain.response_cache import response_key
from shared.domain.runs import Job, Run, job_key
from shared.settings import Settings


def output_uri(job: Job) -> str | None:
    """Where a job's output is, `{output}/{jobId}/{input file}.out`; None if it never ran."""
    if job.bedrock_arn is None:
        return None
    bedrock_id = job.bedrock_arn.rsplit("/", 1)[-1]
    return f"{job.output_uri}{bedrock_id}/{job.chunk_uri.rsplit('/', 1)[-1]}.out"


def output_lines(job: Job, objects: SyncObjects) -> Iterator[bytes]:
    """A job's output lines; none if it never ran."""
    uri = output_uri(job)
    return iter(()) if uri is None else objects.lines(uri)


@dataclass
class RetryPlan:
    """Per chunk: a retry job over its failed records, or those records to run on demand."""

    jobs: list[Job] = field(default_factory=list)
    on_demand: dict[int, list[dict]] = field(default_factory=dict)


def plan_retries(run: Run, jobs: list[Job], *, objects: SyncObjects, settings: Settings) -> RetryPlan:
    """Failed and missing records of each chunk not retried yet: a new job if enough, else on demand."""
    plan = RetryPlan()
    by_chunk: dict[int, list[Job]] = {}
    for job in jobs:
        by_chunk.setdefault(job.index, []).append(job)
    family = family_of(run.spec.family_model)
    converse = run.spec.invocation == "Converse"
    for index, chunk_jobs in sorted(by_chunk.items()):
        first = next(j for j in chunk_jobs if j.attempt == 0)
        if len(chunk_jobs) > 1 or first.status == "CANCELLED" or objects.size(layout.ondemand_uri(settings, run.run_id, index)):
            continue  # retried once already
        if first.status == "COMPLETED" and first.failed == 0 and first.processed == first.records:
            continue
        if first.status == "FAILED" and first.bedrock_arn is None:
            continue  # Bedrock refused to create it (a validation error): the same job would be refused again
        done = {rid for rid, result in parse_output_lines(output_lines(first, objects), family, converse).items()
                if result.error is None}
        # Rows answered from the response cache were never sent: nothing of theirs to retry.
        done |= set(parse_output_lines(objects.lines(layout.cached_uri(settings, run.run_id, index)), family, converse))
        wanted = {record_id(row) for row in range(first.first_row, first.end_row)} - done
        if not wanted:
            continue
        if len(wanted) >= settings.min_records_per_job:
            plan.jobs.append(_retry_job(first, wanted, objects=objects))
        else:
            plan.on_demand[index] = [record for record in _records(first, objects) if record["recordId"] in wanted]
    return plan


def _records(job: Job, objects: SyncObjects) -> Iterator[dict]:
    for line in objects.lines(job.chunk_uri):
        yield orjson.loads(line)


def _retry_job(first: Job, wanted: set[str], *, objects: SyncObjects) -> Job:
    """A retry job over the chunk's wanted records, its input streamed to S3 (a whole failed job's
    input may be up to a gigabyte, so it is never held in memory)."""
    uri = first.chunk_uri.replace(".jsonl", "-retry.jsonl")
    records = size = 0
    with objects.writing(uri) as out:
        for line in objects.lines(first.chunk_uri):
            if orjson.loads(line)["recordId"] in wanted:
                out.write(line + b"\n")
                records += 1
                size += len(line) + 1
    return first.model_copy(update={
        "job_key": job_key(first.index, 1), "attempt": 1, "status": "PENDING", "version": 0, "chunk_uri": uri,
        "records": records, "bytes": size, "bedrock_arn": None, "bedrock_status": None, "message": None,
        "processed": 0, "succeeded": 0, "failed": 0,
    })


def assemble_results(run: Run, jobs: list[Job], *, objects: SyncObjects, settings: Settings) -> tuple[str, AssembleSummary]:
    """Join every input row to its result; write the run's one result file; its URI and counts."""
    family = family_of(run.spec.family_model)
    converse = run.spec.invocation == "Converse"
    fmt = run.spec.output_format
    result_uri = layout.result_uri(settings, run.run_id, fmt)
    workdir = Path(tempfile.mkdtemp(prefix=f"collect-{run.run_id}-", dir=_ensure(settings.workdir)))
    try:
        rows_path = workdir / "rows.parquet"
        with open(rows_path, "wb") as out:
            shutil.copyfileobj(objects.open(layout.rows_uri(settings, run.run_id)), out, 1024 * 1024)
        by_chunk: dict[int, list[Job]] = {}
        for job in jobs:
            by_chunk.setdefault(job.index, []).append(job)

        def results_for_chunk(chunk: Chunk) -> ChunkResults:
            uris = [layout.cached_uri(settings, run.run_id, chunk.index)]
            uris += [output_uri(job) for job in sorted(by_chunk.get(chunk.index, []), key=lambda j: j.attempt)]
            uris.append(layout.ondemand_uri(settings, run.run_id, chunk.index))
            rows = chunk.end_row - chunk.first_row
            return merge_results(rows, [_source_results(uri, chunk, objects=objects, family=family, converse=converse)
                                        for uri in uris if uri is not None])

        # Written straight to S3 as it is assembled: the upload overlaps the join, and an error
        # aborts it, so a result object only ever appears whole.
        with objects.writing(result_uri) as out:
            summary = assemble(rows_path, _plan(run, jobs), results_for_chunk, out_format=fmt, out_stream=out,
                               family=family, converse=converse)
        return result_uri, summary
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _source_results(uri: str, chunk: Chunk, *, objects: SyncObjects, family: Family, converse: bool) -> SourceResults:
    """One output file's results on its chunk's rows: read with Arrow, or line by line where only
    that reads it exactly (a torn line, an unexpected shape, Titan embeddings)."""
    rows = chunk.end_row - chunk.first_row
    found = read_output_blocks(objects.blocks(uri), family, converse, first_row=chunk.first_row, rows=rows)
    if found is None:
        found = source_results_of(parse_output_lines(objects.lines(uri), family, converse),
                                  first_row=chunk.first_row, rows=rows)
    return found


def _plan(run: Run, jobs: list[Job]) -> SplitPlan:
    firsts = sorted((job for job in jobs if job.attempt == 0), key=lambda job: job.index)
    chunks = [Chunk(j.index, j.first_row, j.end_row, j.records, j.bytes, 0) for j in firsts]
    total = run.total_rows or 0
    return SplitPlan(chunks, run.on_demand, total, sum(j.bytes for j in firsts))


def _ensure(path: Path) -> str:
    Path(path).mkdir(parents=True, exist_ok=True)
    return str(path)


def cache_answers(run: Run, jobs: list[Job], *, objects: SyncObjects, cache: ResponseCache, settings: Settings) -> int:
    """Store every answer this run paid for (jobs' and on-demand outputs) in the response cache; the
    number stored. Output lines echo their modelInput, so each pair's key comes from the line itself."""
    model_id = run.spec.model_id
    uris = [output_uri(job) for job in jobs]
    uris += [layout.ondemand_uri(settings, run.run_id, index) for index in sorted({job.index for job in jobs} or {0})]

    def answers() -> Iterator[tuple[str, dict]]:
        for uri in uris:
            if uri is None:
                continue
            for line in objects.lines(uri):
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue  # a torn line: its row reports no output, and nothing is cached
                if isinstance(record, dict) and isinstance(record.get("modelOutput"), dict) \
                        and record.get("error") is None and isinstance(record.get("modelInput"), dict):
                    yield response_key(model_id, record["modelInput"]), record["modelOutput"]

    return cache.put_many(model_id, answers())
