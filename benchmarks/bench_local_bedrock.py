"""The local Bedrock's batch path on the fast engine: CPU microseconds a record, in one process.

    python benchmarks/bench_local_bedrock.py              # 50,000 records (BENCH_RECORDS)

What a batch job costs the service's own code, without moto: the job's JSONL (the benchmark's
SimpleCoT rows as Anthropic Messages bodies, as preprocess writes them) is served from memory
by an in-process S3 stand-in (one object, streamed in 1 MiB chunks; the output taken as it is
uploaded), and BatchRunner validates it (Validating's read and record checks) and processes it
(parse, engine, native responses, output lines, shuffle, upload) exactly as in a running job.
Process CPU time (both the event loop and the engine's thread), after the engine is loaded.
In the running stack the same job also pays moto's side of the S3 traffic and the HTTP of
GetModelInvocationJob polls: see `bench_e2e.py` for those.
"""
from __future__ import annotations

import asyncio
import csv
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from bench_dataplane import ensure_input, input_path  # noqa: E402
from infra.local_bedrock.batch import BatchRunner  # noqa: E402
from infra.local_bedrock.catalogue import resolve  # noqa: E402
from infra.local_bedrock.faults import JobFaults  # noqa: E402
from infra.local_bedrock.inference import Engines  # noqa: E402
from infra.local_bedrock.jobs import Job  # noqa: E402
from infra.local_bedrock.settings import Settings  # noqa: E402

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
TEMPLATE = "Question: {source}\nReasoning: {rationale}"


def job_input(records: int) -> bytes:
    """`records` JSONL lines of Anthropic bodies rendered from the benchmark's CSV rows."""
    ensure_input(220_000)
    source = input_path(220_000, "csv")
    csv.field_size_limit(sys.maxsize)
    lines = []
    with open(source, newline="") as handle:
        for index, row in enumerate(csv.DictReader(handle)):
            if index >= records:
                break
            body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 512,
                    "messages": [{"role": "user", "content": [{"type": "text", "text": TEMPLATE.format(**row)}]}]}
            lines.append(orjson.dumps({"recordId": f"{index:011d}", "modelInput": body}))
    return b"\n".join(lines) + b"\n"


class _Body:
    def __init__(self, data: bytes) -> None:
        self._data = data

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc) -> None:
        return None

    async def iter_chunks(self, size: int):
        for start in range(0, len(self._data), size):
            yield self._data[start:start + size]


class MemoryS3:
    """The calls a batch job makes, on one input object held in memory; outputs are counted."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.written = 0

    async def head_object(self, **_):
        return {"ContentLength": len(self.data)}

    async def head_bucket(self, **_):
        return {}

    async def get_object(self, **_):
        return {"Body": _Body(self.data)}

    async def put_object(self, *, Body, **_):
        self.written += len(Body) if isinstance(Body, bytes) else len(Body.read())


class _NoEvents:
    async def job_changed(self, job) -> None:
        return None


async def run(data: bytes, records: int) -> None:
    settings = Settings()
    s3 = MemoryS3(data)
    model = resolve(MODEL)
    engines = Engines(settings)
    engines.preload([model])
    runner = BatchRunner(settings, engines=engines, s3=s3, events=_NoEvents(), executor=ThreadPoolExecutor(1))
    job = Job(job_id="bench", job_arn="arn:bench", job_name="bench", model=model, model_id=MODEL, role_arn="role",
              client_request_token=None, input_data_config={"s3InputDataConfig": {"s3Uri": "s3://bench/in.jsonl"}},
              output_data_config={"s3OutputDataConfig": {"s3Uri": "s3://bench/out/"}}, timeout_hours=24,
              invocation_type=None, vpc_config=None, faults=JobFaults())
    started = time.process_time()
    files = await runner._validate(job)
    validated = time.process_time()
    await runner._process(job, files)
    done = time.process_time()
    assert job.succeeded == records, (job.succeeded, records)
    print(f"{records:,} records, {len(data) / 1e6:.0f} MB in, {s3.written / 1e6:.0f} MB out, load {os.getloadavg()[0]:.1f}")
    print(f"  validate: {(validated - started) / records * 1e6:6.1f} us CPU a record")
    print(f"  process:  {(done - validated) / records * 1e6:6.1f} us CPU a record")


def main() -> None:
    records = int(os.environ.get("BENCH_RECORDS", "50000"))
    asyncio.run(run(job_input(records), records))


if __name__ == "__main__":
    main()
