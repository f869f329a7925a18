"""Staging a run's input: stream it from S3 through the data plane, upload the chunks and rows.

Runs in a worker thread (the data plane is CPU-bound and blocking); the input is read with one
streaming GET and never held in memory; the local spool is removed once uploaded.
"""
from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from shared.adapters.objects import SyncObjects
from shared.dataplane.prepare import PrepareLimits, PrepareSpec, Prepared, prepare
from shared.domain import layout
from shared.domain.runs import Job, Run, job_key
from shared.settings import Settings


@dataclass(frozen=True)
class Staged:
    total_rows: int
    jobs: list[Job]
    on_demand_records: list[bytes]  # the JSONL records, when the input is below a job's minimum


def stage_input(run: Run, *, objects: SyncObjects, settings: Settings) -> Staged:
    assert run.spec is not None
    # Per attempt: two deliveries of the same start may stage at once; each writes its own spool.
    workdir = Path(settings.workdir) / f"{run.run_id}-{uuid.uuid4().hex[:8]}"
    try:
        prepared = _prepare(run, objects=objects, settings=settings, workdir=workdir)
        objects.upload_file(str(prepared.rows_path), layout.rows_uri(settings, run.run_id))
        if prepared.plan.on_demand:
            return Staged(prepared.total_rows, [], prepared.spool_path.read_bytes().splitlines())
        jobs = []
        for chunk in prepared.plan.chunks:
            uri = layout.chunk_uri(settings, run.run_id, chunk.index)
            objects.upload_range(str(prepared.spool_path), chunk.byte_offset, chunk.byte_length, uri)
            jobs.append(Job(run_id=run.run_id, job_key=job_key(chunk.index, 0), index=chunk.index,
                            model_id=run.spec.model_id, chunk_uri=uri, output_uri=layout.output_prefix(settings, run.run_id),
                            records=chunk.records, bytes=chunk.bytes, first_row=chunk.first_row,
                            end_row=chunk.end_row))
        return Staged(prepared.total_rows, jobs, [])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _prepare(run: Run, *, objects: SyncObjects, settings: Settings, workdir: Path) -> Prepared:
    spec = run.spec
    stream = objects.open(run.input_uri)
    try:
        return prepare(
            stream, name=run.input_uri,
            spec=PrepareSpec(model_id=spec.model_id, template=spec.template, system=spec.system, params=spec.params,
                             converse=spec.invocation == "Converse"),
            limits=PrepareLimits(min_records=settings.min_records_per_job, max_records=settings.max_records_per_job,
                                 max_file_bytes=settings.max_bytes_per_file, max_record_bytes=settings.max_record_bytes),
            workdir=workdir,
        )
    finally:
        stream.close()
