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

import numpy as np
import orjson
import pyarrow.parquet as pq

from shared.adapters.objects import SyncObjects
from shared.adapters.response_cache import ResponseCache
from shared.dataplane.assemble import (
    AssembleSummary, ChunkResults, SourceResults, assemble, merge_results, parse_output_lines, read_output_blocks,
    source_results_of,
)
from shared.dataplane.assemble import RESULT_COLUMNS
from shared.dataplane.checked_outputs import SchemaCheck
from shared.dataplane.duplicates import read_duplicates
from shared.dataplane.fan_out import FanOut
from shared.dataplane.prepare import record_id
from shared.domain.output_schema import OutputValidator, follow_up_body, follow_up_instruction
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
    dup_rows, _ = read_duplicates(objects.lines(layout.duplicates_uri(settings, run.run_id)))
    for index, chunk_jobs in sorted(by_chunk.items()):
        first = next(j for j in chunk_jobs if j.attempt == 0)
        if len(chunk_jobs) > 1 or first.status == "CANCELLED" or objects.size(layout.ondemand_uri(settings, run.run_id, index)):
            continue  # retried once already
        if first.status == "COMPLETED" and first.failed == 0 and first.processed == first.records \
                and not manifest_says_missing(first, objects):
            continue
        if first.status == "FAILED" and first.bedrock_arn is None:
            continue  # Bedrock refused to create it (a validation error): the same job would be refused again
        done = {rid for rid, result in parse_output_lines(output_lines(first, objects), family, converse).items()
                if result.error is None}
        # Rows answered from the response cache were never sent: nothing of theirs to retry.
        done |= set(parse_output_lines(objects.lines(layout.cached_uri(settings, run.run_id, index)), family, converse))
        # Rows repeating an earlier row's request were never sent: the first row's answer is theirs.
        a, b = np.searchsorted(dup_rows, [first.first_row, first.end_row])
        done |= {record_id(row) for row in dup_rows[a:b].tolist()}
        wanted = {record_id(row) for row in range(first.first_row, first.end_row)} - done
        if not wanted:
            continue
        # With a deadline, what is missing goes on demand: a second batch job could not be sure to finish.
        if len(wanted) >= settings.min_records_per_job and run.spec.deadline is None and first.cut_short is None:
            plan.jobs.append(_retry_job(first, wanted, objects=objects))
        else:
            plan.on_demand[index] = [record for record in _records(first, objects) if record["recordId"] in wanted]
    return plan


def manifest_uri(job: Job) -> str | None:
    """Where Bedrock wrote the job's manifest, `{output}/{jobId}/manifest.json.out`; None if it never ran."""
    if job.bedrock_arn is None:
        return None
    return f"{job.output_uri}{job.bedrock_arn.rsplit('/', 1)[-1]}/manifest.json.out"


def manifest_says_missing(job: Job, objects: SyncObjects) -> bool:
    """Whether the job's manifest counts records that failed or were never processed: a Completed job
    is treated by its counts, not its status (a manifest that cannot be read says nothing)."""
    uri = manifest_uri(job)
    raw = objects.read_small(uri) if uri is not None else None
    try:
        manifest = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        return False
    if not isinstance(manifest, dict):
        return False
    total, processed = manifest.get("totalRecordCount"), manifest.get("processedRecordCount")
    failed = manifest.get("errorRecordCount") or 0
    return bool(failed) or (isinstance(total, int) and isinstance(processed, int) and processed < total)


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


@dataclass
class Tally:
    """What assembly learnt beyond the row counts, for the summary: tokens of answers from the
    response cache and from on-demand calls, the rows fanned out, the outputs checked."""

    cached_in: int = 0
    cached_out: int = 0
    on_demand_in: int = 0
    on_demand_out: int = 0
    fan_out: FanOut | None = None
    schema: SchemaCheck | None = None


def _schema_check(run: Run, taken: set[str]) -> SchemaCheck | None:
    if run.spec.output_schema is None:
        return None
    return SchemaCheck(OutputValidator(run.spec.output_schema, run.spec.extract), taken_names=taken)


def chunk_results(run: Run, chunk_jobs: list[Job], chunk: Chunk, *, objects: SyncObjects, settings: Settings,
                  tally: Tally | None = None) -> ChunkResults:
    """A chunk's results from its files in order: cached answers, each job attempt, on-demand answers."""
    family, converse = family_of(run.spec.family_model), run.spec.invocation == "Converse"
    cached = _source_results(layout.cached_uri(settings, run.run_id, chunk.index), chunk, objects=objects,
                             family=family, converse=converse)
    found = [cached]
    found += [_source_results(uri, chunk, objects=objects, family=family, converse=converse)
              for uri in (output_uri(job) for job in sorted(chunk_jobs, key=lambda j: j.attempt)) if uri is not None]
    on_demand = _source_results(layout.ondemand_uri(settings, run.run_id, chunk.index), chunk, objects=objects,
                                family=family, converse=converse)
    found.append(on_demand)
    if tally is not None:
        # Cached rows are never sent elsewhere, and on-demand calls only answer rows that had none:
        # each file's tokens are what its answers cost (error lines carry none).
        tally.cached_in += int(cached.input_tokens.sum())
        tally.cached_out += int(cached.output_tokens.sum())
        tally.on_demand_in += int(on_demand.input_tokens.sum())
        tally.on_demand_out += int(on_demand.output_tokens.sum())
    return merge_results(chunk.end_row - chunk.first_row, found)


def schema_follow_ups(run: Run, jobs: list[Job], *, objects: SyncObjects, settings: Settings) -> dict[int, list[dict]]:
    """Per chunk not followed up yet: a follow-up record for each output that misses the run's
    output_schema, its body the original request with the answer and the validation error added."""
    family, converse = family_of(run.spec.family_model), run.spec.invocation == "Converse"
    check = _schema_check(run, set())
    by_chunk: dict[int, list[Job]] = {}
    for job in jobs:
        by_chunk.setdefault(job.index, []).append(job)
    wanted: dict[int, list[dict]] = {}
    for chunk in _plan(run, jobs).assembly_chunks():
        if objects.size(layout.schema_retry_uri(settings, run.run_id, chunk.index)) is not None:
            continue  # followed up already: once only
        merged = chunk_results(run, by_chunk.get(chunk.index, []), chunk, objects=objects, settings=settings)
        bad = {rid: (text, problem) for rid, text, problem in check.invalid_rows(chunk.first_row, merged)}
        records: list[dict] = []
        if bad:
            for body_rid, body in _request_bodies(run, by_chunk.get(chunk.index, []), chunk, set(bad),
                                                  objects=objects, settings=settings):
                text, problem = bad[body_rid]
                instruction = follow_up_instruction(problem, run.spec.output_schema)
                records.append({"recordId": body_rid,
                                "modelInput": follow_up_body(family, converse, body, text, instruction)})
        wanted[chunk.index] = records
    return wanted


def _request_bodies(run: Run, chunk_jobs: list[Job], chunk: Chunk, rids: set[str], *, objects: SyncObjects,
                    settings: Settings) -> Iterator[tuple[str, dict]]:
    """(recordId, modelInput) of the records named, read back from the output lines that echo them."""
    uris = [layout.cached_uri(settings, run.run_id, chunk.index)]
    uris += [output_uri(job) for job in chunk_jobs]
    uris.append(layout.ondemand_uri(settings, run.run_id, chunk.index))
    left = set(rids)
    for uri in uris:
        if uri is None or not left:
            continue
        for line in objects.lines(uri):
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            rid = record.get("recordId") if isinstance(record, dict) else None
            if rid in left and isinstance(record.get("modelInput"), dict):
                left.discard(rid)
                yield rid, record["modelInput"]


def assemble_results(run: Run, jobs: list[Job], *, objects: SyncObjects, settings: Settings,
                     tally: Tally | None = None) -> tuple[str, AssembleSummary]:
    """Join every input row to its result; write the run's one result file; its URI and counts.
    Repeated requests get their first row's answer; with an output_schema, outputs are checked and
    typed columns added; `tally` (if given) gets what the summary says about both."""
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

        tally = tally if tally is not None else Tally()
        tally.fan_out = FanOut(*read_duplicates(objects.lines(layout.duplicates_uri(settings, run.run_id))))
        taken = set(pq.read_schema(rows_path).names) | set(RESULT_COLUMNS)
        tally.schema = check = _schema_check(run, taken)

        def results_for_chunk(chunk: Chunk) -> ChunkResults:
            merged = chunk_results(run, by_chunk.get(chunk.index, []), chunk, objects=objects, settings=settings,
                                   tally=tally)
            if check is not None:
                retried = parse_output_lines(objects.lines(layout.schema_retry_uri(settings, run.run_id, chunk.index)),
                                             family, converse)
                tally.on_demand_in += sum(r.input_tokens for r in retried.values())
                tally.on_demand_out += sum(r.output_tokens for r in retried.values())
                merged = check.apply(chunk.first_row, merged, retried)
            if tally.fan_out:
                merged = tally.fan_out.apply(chunk.first_row, merged)
            return check.typed(merged) if check is not None else merged

        # Written straight to S3 as it is assembled: the upload overlaps the join, and an error
        # aborts it, so a result object only ever appears whole.
        with objects.writing(result_uri) as out:
            summary = assemble(rows_path, _plan(run, jobs), results_for_chunk, out_format=fmt, out_stream=out,
                               family=family, converse=converse, extra_fields=check.fields if check else ())
        return result_uri, summary
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# Output files are read up to 16 blocks (16 MiB) ahead of the parsing, so the local S3 goes on
# sending while Arrow parses: 2.2M CSV rows, 4 alternating pairs, 103.4k -> 107.1k rows/s, +8-19 MB.
_OUTPUT_READ_AHEAD = 16


def _source_results(uri: str, chunk: Chunk, *, objects: SyncObjects, family: Family, converse: bool) -> SourceResults:
    """One output file's results on its chunk's rows: read with Arrow, or line by line where only
    that reads it exactly (a torn line, an unexpected shape, Titan embeddings)."""
    rows = chunk.end_row - chunk.first_row
    found = read_output_blocks(objects.blocks(uri, ahead=_OUTPUT_READ_AHEAD), family, converse,
                               first_row=chunk.first_row, rows=rows)
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
