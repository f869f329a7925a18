"""A whole run on demand is streamed: its records are counted and written while staging, read back a
window at a time as they are sent with bounded concurrency, and answered into a file."""
from __future__ import annotations

import asyncio
import io
from pathlib import Path

import orjson
import pytest

from shared import ondemand
from shared.errors import RetryableError
from shared.ondemand import OnDemandRecords, invoke_stream, spool_on_demand
from tests.unit.fakes import FakeObjects

URI = "s3://quarry-work/runs/r/ondemand-input.jsonl"


def _records(n: int) -> list[bytes]:
    return [orjson.dumps({"recordId": f"{i:010d}", "modelInput": {"inputText": f"row {i}"}}) for i in range(n)]


class CountingRuntime:
    """Answers after a pause, counting the calls in flight; fails the records it is told to."""

    def __init__(self, fail: set[str] = frozenset()) -> None:
        self.in_flight = self.most = 0
        self.fail = fail

    async def invoke(self, model_id: str, body: dict) -> dict:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        await asyncio.sleep(0.001)
        self.in_flight -= 1
        if body["inputText"] in self.fail:
            raise RetryableError("ThrottlingException: slow down")
        return {"results": [{"outputText": body["inputText"].upper()}]}


def test_staged_records_are_counted_and_written_and_iterate_from_s3(tmp_path: Path):
    spool = tmp_path / "spool.jsonl"
    spool.write_bytes(b"\n".join(_records(5)) + b"\n")
    objects = FakeObjects()

    records = spool_on_demand(spool, uri=URI, objects=objects, write=True)

    assert (len(records), records.nbytes) == (5, spool.stat().st_size)
    assert list(records) == _records(5) and objects.objects[URI] == spool.read_bytes()


def test_a_dry_run_counts_the_records_and_writes_nothing(tmp_path: Path):
    spool = tmp_path / "spool.jsonl"
    spool.write_bytes(b"\n".join(_records(3)) + b"\n")
    objects = FakeObjects()

    records = spool_on_demand(spool, uri=URI, objects=objects, write=False)

    assert len(records) == 3 and objects.objects == {}
    with pytest.raises(RuntimeError, match="dry run"):
        list(records)


async def test_every_record_is_answered_once_with_bounded_concurrency_and_windowed_reads(monkeypatch):
    monkeypatch.setattr(ondemand, "READ_WINDOW", 7)
    runtime, out = CountingRuntime(fail={"row 3"}), io.BytesIO()

    sent = await invoke_stream(iter(_records(100)), model_id="amazon.titan-text-lite-v1", runtime=runtime, concurrency=4, out=out)

    answers = {o["recordId"]: o for o in map(orjson.loads, out.getvalue().splitlines())}
    assert sent == 100 and len(answers) == 100 and runtime.most <= 4
    assert answers["0000000005"]["modelOutput"] == {"results": [{"outputText": "ROW 5"}]}
    assert answers["0000000003"]["error"]["errorMessage"].startswith("ThrottlingException")


async def test_records_are_read_only_as_fast_as_they_are_sent(monkeypatch):
    monkeypatch.setattr(ondemand, "READ_WINDOW", 10)
    read = 0
    first_answer_at = None

    class Tracking(io.BytesIO):
        def write(self, data):
            nonlocal first_answer_at
            if first_answer_at is None:
                first_answer_at = read
            return super().write(data)

    def lines():
        nonlocal read
        for line in _records(1_000):
            read += 1
            yield line

    out = Tracking()
    await invoke_stream(lines(), model_id="amazon.titan-text-lite-v1", runtime=CountingRuntime(), concurrency=2, out=out)

    assert first_answer_at <= 10, "the first answers are written before the rest of the records are read"


def test_an_empty_on_demand_set_is_not_written(tmp_path: Path):
    spool = tmp_path / "spool.jsonl"
    spool.write_bytes(b"")
    records = spool_on_demand(spool, uri=URI, objects=FakeObjects(), write=True)
    assert records == OnDemandRecords(None, 0, 0, records.objects) and list(records) == []


async def test_a_run_below_a_jobs_minimum_sends_its_records_from_s3_and_writes_every_answer(tmp_path: Path):
    from services.preprocess.handlers import start_run
    from shared.domain import layout
    from shared.domain.spec import RunSpec
    from shared.messages import StartRun
    from shared.ondemand import records_uri
    from shared.settings import Settings
    from tests.unit.fakes import FakeQueues, FakeRuntime, FakeStore

    run_id = "a" * 32
    source = "s3://quarry-inputs/incoming/x/few.csv"
    objects = FakeObjects({source: b"text\n" + b"".join(f"review {n}\n".encode() for n in range(7))})
    store, queues, runtime = FakeStore(), FakeQueues(), FakeRuntime()
    settings = Settings(workdir=tmp_path / "work", min_records_per_job=100)

    await start_run(StartRun(run_id=run_id, input_uri=source, origin="cli", source_key=f"cli:{run_id}",
                             spec=RunSpec(model_id="anthropic.claude-3-haiku-20240307-v1:0", template="{{ text }}")),
                    store=store, queues=queues, objects=objects, runtime=runtime, settings=settings)

    run = await store.get_run(run_id)
    answers = [orjson.loads(line) for line in objects.objects[layout.ondemand_uri(settings, run_id, 0)].splitlines()]
    assert (run.status, run.on_demand, run.on_demand_records) == ("FINALIZING", True, 7)
    assert len(objects.objects[records_uri(settings, run_id)].splitlines()) == 7, "the records wait in S3, not in memory"
    assert sorted(a["recordId"] for a in answers) == [f"{i:010d}" for i in range(7)] and len(runtime.calls) == 7
    assert all(a["modelOutput"]["content"][0]["text"] == "ok" for a in answers)
    assert list((tmp_path / "work").glob("ondemand-*")) == [], "the local answer file is removed"
