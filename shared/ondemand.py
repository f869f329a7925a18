"""On-demand InvokeModel for records too few for a batch job, written as Bedrock's batch output.

Inputs below a job's minimum, and retries of a handful of failed records, go through here; the
lines it returns have exactly the shape of a batch job's output lines, so postprocess reads both
the same way.
"""
from __future__ import annotations

import asyncio
from typing import Any, Iterable

import orjson
import structlog

from shared.adapters.bedrock import Runtime
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
