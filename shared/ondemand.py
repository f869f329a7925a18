"""On-demand InvokeModel for records too few for a batch job, written as Bedrock's batch output.

Inputs below a job's minimum, and retries of a handful of failed records, go through here; the
lines it returns have exactly the shape of a batch job's output lines, so postprocess reads both
the same way.
"""
from __future__ import annotations

import asyncio
import itertools
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator

import orjson
import structlog

from shared.adapters.bedrock import Runtime
from shared.domain import layout
from shared.errors import QuarryError

log = structlog.get_logger("quarry.ondemand")


async def invoke_records(records: Iterable[dict[str, Any]], *, model_id: str, runtime: Runtime,
                         concurrency: int) -> list[bytes]:
    """One output line per record: modelOutput, or error {errorCode, errorMessage}."""
    gate = asyncio.Semaphore(concurrency)

    async def one(record: dict[str, Any]) -> bytes:
        line: dict[str, Any] = {"recordId": record["recordId"], "modelInput": record["modelInput"]}
        async with gate:
            try:
                line["modelOutput"] = await runtime.invoke(model_id, record["modelInput"])
            except QuarryError as exc:
                line["error"] = {"errorCode": 400 if "ValidationException" in str(exc) else 500, "errorMessage": str(exc)}
        return orjson.dumps(line) + b"\n"

    return list(await asyncio.gather(*(one(record) for record in records)))


# --- a whole run on demand, streamed ----------------------------------------------------------------------
# Lines read from the records' file at a time (in a worker thread): with the calls in flight, all
# that is ever held in memory, however many records a provisioned model's run has.
READ_WINDOW = 256


def records_uri(settings: Any, run_id: str) -> str:
    """Where a run's on-demand records wait to be sent (written by staging, read as they are sent)."""
    return f"{layout.run_prefix(settings, run_id)}/ondemand-input.jsonl"


@dataclass(frozen=True)
class OnDemandRecords:
    """The JSONL records a run sends on demand (below a job's minimum, or a model Bedrock runs no
    batch jobs for): where they are, how many, how many bytes. Iterating streams them from S3."""

    uri: str | None  # None: nothing was written (a dry run, or no record goes on demand)
    count: int = 0
    nbytes: int = 0  # JSONL bytes, newlines included
    objects: Any = None

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[bytes]:
        if self.count and self.uri is None:
            raise RuntimeError("these on-demand records were counted, not written (a dry run): they cannot be sent")
        if self.count:
            yield from (line for line in self.objects.lines(self.uri) if line.strip())


def spool_on_demand(spool: Path, *, uri: str, objects: Any, write: bool) -> OnDemandRecords:
    """Count the spool's records (streamed) and upload it to `uri` unless `write` is False."""
    count = nbytes = 0
    with open(spool, "rb") as f:
        for line in f:
            if line.strip():
                count += 1
                nbytes += len(line.rstrip(b"\n")) + 1
    if write and count:
        objects.upload_file(str(spool), uri)
    return OnDemandRecords(uri if write and count else None, count, nbytes, objects)


async def invoke_stream(records: Iterable[bytes], *, model_id: str, runtime: Runtime, concurrency: int,
                        out: BinaryIO) -> int:
    """Send every JSONL record on demand, at most `concurrency` at a time, and write each output line
    (batch output's shape, in completion order: joined by recordId) to `out`; the records sent.

    The records are read READ_WINDOW lines at a time in a worker thread (they may stream from S3),
    so memory holds one window and the calls in flight, never the run."""
    lines = iter(records)
    buffered: deque[bytes] = deque()
    pending: set[asyncio.Task[bytes]] = set()
    exhausted, sent = False, 0
    one = _one_call(model_id, runtime)
    while True:
        while len(pending) < concurrency and not (exhausted and not buffered):
            if not buffered:
                window = await asyncio.to_thread(lambda: list(itertools.islice(lines, READ_WINDOW)))
                if not window:
                    exhausted = True
                    break
                buffered.extend(window)
            pending.add(asyncio.ensure_future(one(orjson.loads(buffered.popleft()))))
        if not pending:
            return sent
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            out.write(task.result())
        sent += len(done)


def _one_call(model_id: str, runtime: Runtime):
    async def one(record: dict[str, Any]) -> bytes:
        line: dict[str, Any] = {"recordId": record["recordId"], "modelInput": record["modelInput"]}
        try:
            line["modelOutput"] = await runtime.invoke(model_id, record["modelInput"])
        except QuarryError as exc:
            line["error"] = {"errorCode": 400 if "ValidationException" in str(exc) else 500, "errorMessage": str(exc)}
        return orjson.dumps(line) + b"\n"

    return one
