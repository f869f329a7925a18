"""Staging a run's input: stream it from S3 through the data plane, upload the chunks and rows.

Runs in a worker thread (the data plane is CPU-bound and blocking); the input is read with one
streaming GET and never held in memory; the local spool is removed once uploaded. With the response cache on (spec.cache reuse), records
already answered are taken out before the jobs are planned: their answers go to cached/, the
rest to jobs (or on demand, when too few are left).
"""
from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from services.preprocess.chunk_uploads import ChunkUploads
from shared.adapters.objects import SyncObjects
from shared.adapters.response_cache import ResponseCache
from shared.dataplane.cached_records import CacheSplit, cached_byte_range, rows_of_chunks, split_cached
from shared.dataplane.duplicates import duplicates_bytes, split_duplicates
from shared.dataplane.prepare import SPOOL_NAME, PrepareLimits, PrepareSpec, Prepared, prepare
from shared.dataplane.splitter import plan_chunks
from shared.domain import layout
from shared.domain.spec import batch_capable
from shared.domain.runs import Job, Run, job_key
from shared.ondemand import OnDemandRecords, records_uri, spool_on_demand
from shared.settings import Settings


@dataclass(frozen=True)
class Staged:
    total_rows: int
    jobs: list[Job]
    # The JSONL records, when the input is below a job's minimum (or the model runs no batch jobs):
    # counted and written to S3 while staging, streamed from there as they are sent.
    on_demand_records: OnDemandRecords | list[bytes]
    cached_records: int = 0  # rows answered from the response cache (their answers are in cached/)
    deduplicated_records: int = 0  # rows whose request repeats an earlier row's: sent once, fanned out


def stage_input(run: Run, *, objects: SyncObjects, settings: Settings, cache: ResponseCache | None = None) -> Staged:
    assert run.spec is not None
    # Per attempt: two deliveries of the same start may stage at once; each writes its own spool.
    workdir = Path(settings.workdir) / f"{run.run_id}-{uuid.uuid4().hex[:8]}"
    uploads: ChunkUploads | None = None
    try:
        prepared, uploads = _prepare(run, objects=objects, settings=settings, workdir=workdir,
                                     early=cache is None or run.spec.cache != "reuse")
        # A dry run reads, renders and counts, and writes nothing.
        write = not run.spec.dry_run
        if write and uploads is not None:
            uploads.submit_file(str(prepared.rows_path), layout.rows_uri(settings, run.run_id))  # while dups are found
        elif write:
            objects.upload_file(str(prepared.rows_path), layout.rows_uri(settings, run.run_id))
        spool, plan, split = prepared.spool_path, prepared.plan, None
        # Identical requests are sent once: repeats leave the spool, their rows get the first's answer.
        dups = split_duplicates(prepared.spool_path, workdir=workdir)
        uploaded = uploads.wait() if uploads is not None else {}
        if dups is not None:
            if write:
                objects.put(layout.duplicates_uri(settings, run.run_id), duplicates_bytes(dups))
            spool, split = dups.spool, dups
            plan = plan_chunks(dups.sizes, **_split_limits(run, settings))
        if cache is not None and run.spec.cache == "reuse":
            model_id = run.spec.model_id
            split = split_cached(spool, model_id=model_id, known=cache.known(model_id),
                                 fetch=lambda keys: cache.get_many(model_id, keys), workdir=workdir)
            if split.cached_count:
                spool = split.spool
                plan = plan_chunks(split.sizes, **_split_limits(run, settings))
            else:
                split = dups
        cached = split.cached_count if isinstance(split, CacheSplit) else 0
        deduplicated = dups.count if dups is not None else 0
        if plan.on_demand:
            if isinstance(split, CacheSplit) and write:
                objects.upload_file(str(split.cached), layout.cached_uri(settings, run.run_id, 0))
            records = spool_on_demand(spool, uri=records_uri(settings, run.run_id), objects=objects, write=write)
            return Staged(prepared.total_rows, [], records, cached, deduplicated)
        chunks = plan.chunks if split is None else rows_of_chunks(plan, split, prepared.total_rows)
        jobs = []
        for chunk in chunks:
            uri = layout.chunk_uri(settings, run.run_id, chunk.index)
            # Chunks uploaded while the input was prepared are not sent again (unless the spool changed).
            if write and (split is not None or uploaded.get(chunk.index) != chunk):
                objects.upload_range(str(spool), chunk.byte_offset, chunk.byte_length, uri)
            if isinstance(split, CacheSplit) and write:
                offset, length = cached_byte_range(split, chunk.first_row, chunk.end_row)
                if length:
                    objects.upload_range(str(split.cached), offset, length,
                                         layout.cached_uri(settings, run.run_id, chunk.index))
            jobs.append(Job(run_id=run.run_id, job_key=job_key(chunk.index, 0), index=chunk.index,
                            model_id=run.spec.model_id, chunk_uri=uri, output_uri=layout.output_prefix(settings, run.run_id),
                            records=chunk.records, bytes=chunk.bytes, first_row=chunk.first_row,
                            end_row=chunk.end_row))
        return Staged(prepared.total_rows, jobs, [], cached, deduplicated)
    finally:
        if uploads is not None:
            uploads.close()  # before the spool it reads is removed
        shutil.rmtree(workdir, ignore_errors=True)


def _split_limits(run: Run, settings: Settings) -> dict[str, int]:
    """The splitter's limits: Bedrock's quotas, or none at all (everything on demand) for a model
    Bedrock runs no batch jobs for (provisioned throughput, custom model deployments)."""
    if not batch_capable(run.spec.model_id):
        return {"min_records": _NEVER, "max_records": _NEVER, "max_bytes": settings.max_bytes_per_file}
    return {"min_records": settings.min_records_per_job, "max_records": settings.max_records_per_job,
            "max_bytes": settings.max_bytes_per_file}


# More records than any input holds: the splitter then plans no job, only on-demand calls.
_NEVER = 1 << 62


# Inputs at least this large have their chunks uploaded while they are prepared
# (services/preprocess/chunk_uploads.py); smaller ones are planned whole, then uploaded.
EARLY_UPLOAD_MIN_BYTES = 64 << 20


def _prepare(run: Run, *, objects: SyncObjects, settings: Settings, workdir: Path,
             early: bool) -> tuple[Prepared, ChunkUploads | None]:
    """The prepared input, and the uploads of its chunks started while it was prepared (None when
    the input is planned whole first); the caller waits for them, then closes them."""
    spec = run.spec
    limits = _split_limits(run, settings)
    size = objects.size(run.input_uri) if early and not spec.dry_run else None
    stream = objects.open(run.input_uri)
    uploads = None
    try:
        if size is not None and size >= EARLY_UPLOAD_MIN_BYTES:
            uploads = ChunkUploads(objects, workdir / SPOOL_NAME,
                                   lambda index: layout.chunk_uri(settings, run.run_id, index)).start()
        prepared = prepare(
            stream, name=run.input_uri,
            spec=PrepareSpec(model_id=spec.family_model, template=spec.template, system=spec.system,
                             params=spec.params, converse=spec.invocation == "Converse"),
            limits=PrepareLimits(min_records=limits["min_records"], max_records=limits["max_records"],
                                 max_file_bytes=settings.max_bytes_per_file,
                                 max_record_bytes=settings.max_record_bytes),
            workdir=workdir, input_bytes=size, on_chunk=uploads.submit if uploads else None,
            )
        return prepared, uploads
    except BaseException:
        if uploads is not None:
            uploads.close()
        raise
    finally:
        stream.close()
