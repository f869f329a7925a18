"""End to end through the local stack: a SimpleCoT file dropped into S3 until its run SUCCEEDED.

    python benchmarks/bench_e2e.py          # 2.2M rows (BENCH_ROWS=220000 for a quick run)

Starts the whole local stack (moto, the local Bedrock with its fast engine, the five workers) in a
fresh home under benchmarks/.data, uploads a sidecar spec (the benchmark's template, CSV results)
and then the CSV under incoming/summarize/, and delivers S3's event for it a second time, as S3
sometimes does. It then follows the run in DynamoDB and reports the time of each phase from the
drop (the end of the upload): staged (RUNNING), every job ended, collected (the outcome), notified;
each process's CPU seconds and peak RSS (VmHWM); and, from preprocess's log, that the duplicate
delivery waited for the one staging instead of staging again. Not part of `make test`.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

from bench_dataplane import DATA, ensure_input, input_path  # noqa: E402

SPEC = {"template": "Question: {{ source }}\nReasoning: {{ rationale }}", "output_format": "csv"}
FAST_BEDROCK = {"LOCAL_BEDROCK_DELAY_SUBMITTED": "0.1", "LOCAL_BEDROCK_DELAY_VALIDATING": "0.1",
                "LOCAL_BEDROCK_DELAY_SCHEDULED": "0.1"}
TIMEOUT_S = float(os.environ.get("BENCH_E2E_TIMEOUT_S", "1800"))


def _proc(pid: int) -> tuple[float, float]:
    """(CPU seconds, peak RSS in MB) of a live process."""
    stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    cpu = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
    hwm = next(int(line.split()[1]) for line in open(f"/proc/{pid}/status") if line.startswith("VmHWM"))
    return cpu, hwm / 1024


def _load_run(run_id: str):
    from shared.adapters.aws import async_clients
    from shared.adapters.store import RunStore
    from shared.settings import Settings

    async def read():
        settings = Settings()
        async with async_clients(settings, "dynamodb") as clients:
            store = RunStore(clients["dynamodb"], settings.table)
            run = await store.get_run(run_id)
            return run, (await store.list_jobs(run_id) if run else [])
    return asyncio.run(read())


def _duplicate_event(s3, bucket: str, key: str) -> str:
    """S3's Object Created event for the object, as EventBridge delivers it to preprocess's queue."""
    head = s3.head_object(Bucket=bucket, Key=key)
    return json.dumps({
        "version": "0", "id": str(uuid.uuid4()), "detail-type": "Object Created", "source": "aws.s3",
        "account": "123456789012", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "region": "us-east-1",
        "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": {"version": "0", "bucket": {"name": bucket},
                   "object": {"key": key, "size": head["ContentLength"], "eTag": head["ETag"].strip('"'),
                              "sequencer": "617f08299329d189"},
                   "reason": "PutObject"}})


def main() -> None:
    import boto3

    from infra.local_stack.stack import WORKERS, LocalStack, StackConfig
    from infra.processes import free_port
    from services.preprocess.handlers import run_id_of

    rows = int(os.environ.get("BENCH_ROWS", "2200000").split(",")[0])
    ensure_input(rows)
    home = DATA / "e2e-stack"
    shutil.rmtree(home, ignore_errors=True)
    config = StackConfig(home=home, moto_port=free_port(), bedrock_port=free_port(), mail_http_port=free_port(),
                         smtp_port=free_port(), engine="fast", poll_interval_s=1)
    for name in [k for k in os.environ if k.startswith(("AWS_ENDPOINT_URL", "QUARRY_"))]:
        del os.environ[name]
    os.environ.update(FAST_BEDROCK)
    stack = LocalStack(config)
    print(f"starting the local stack in {home} ...", flush=True)
    stack.up(say=lambda line: None)
    try:
        os.environ.update(config.env())
        s3, sqs = boto3.client("s3"), boto3.client("sqs")
        from shared.settings import Settings
        settings = Settings()
        path = input_path(rows, "csv")
        key = f"incoming/summarize/bench-{uuid.uuid4().hex[:8]}.csv"
        s3.put_object(Bucket=settings.inputs_bucket, Key=key + ".spec.json", Body=json.dumps(SPEC).encode())
        started = time.perf_counter()
        s3.upload_file(str(path), settings.inputs_bucket, key)
        dropped = time.perf_counter()
        print(f"{rows:,} rows ({path.stat().st_size / 1e9:.2f} GB) uploaded in {dropped - started:.1f} s "
              "(not counted)", flush=True)
        queue = sqs.get_queue_url(QueueName=settings.queue_name("preprocess"))["QueueUrl"]
        sqs.send_message(QueueUrl=queue, MessageBody=_duplicate_event(s3, settings.inputs_bucket, key))
        etag = s3.head_object(Bucket=settings.inputs_bucket, Key=key)["ETag"].strip('"')
        run_id = run_id_of(f"s3://{settings.inputs_bucket}/{key}#{etag}")
        seen: dict[str, float] = {}
        jobs_ended = None
        while time.perf_counter() - dropped < TIMEOUT_S:
            run, jobs = _load_run(run_id)
            at = time.perf_counter() - dropped
            if run is not None:
                seen.setdefault(run.status, at)
                if jobs and jobs_ended is None and all(job.terminal for job in jobs) \
                        and len({j.index for j in jobs}) == (run.jobs_total or 0):
                    jobs_ended = at
                if run.terminal:
                    if run.settled:
                        seen.setdefault("notified", at)
                        break
            time.sleep(0.5)
        else:
            raise SystemExit(f"the run did not end within {TIMEOUT_S:.0f} s: {seen}")
        processes = {name: stack.worker_pid(name) for name in WORKERS}
        processes["local-bedrock"] = stack._pid("bedrock")
        processes["moto"] = stack._pid("moto")
        usage = {name: _proc(pid) for name, pid in processes.items() if pid}
        summary = run.summary or {}
        log = (home / "logs" / "preprocess.log").read_text(errors="replace")
        mine = [json.loads(line) for line in log.splitlines() if run_id in line and line.startswith("{")]
        events = [entry.get("event") for entry in mine]
        stagings = events.count("run_started")
        print(f"\nrun {run_id}: {run.status}, {summary.get('rows')} rows ({summary.get('succeeded')} succeeded, "
              f"{summary.get('failed')} failed), {run.jobs_total} jobs")
        staged = seen.get("RUNNING", float("nan"))
        finished = next((seen[s] for s in ("SUCCEEDED", "PARTIAL", "FAILED", "CANCELLED") if s in seen), float("nan"))
        print(f"{'phase':<38} {'ends at':>8} {'takes':>8}")
        for name, end, begin in (("staged (drop -> RUNNING)", staged, 0.0),
                                 ("jobs ran (-> every job ended)", jobs_ended, staged),
                                 ("collected (-> outcome recorded)", finished, jobs_ended),
                                 ("notified (-> email sent)", seen.get("notified"), finished)):
            if end is not None and begin is not None:
                print(f"{name:<38} {end:>7.1f}s {end - begin:>7.1f}s")
        print(f"{'total, drop to notified':<38} {seen.get('notified', float('nan')):>7.1f}s")
        print(f"\n{'process':<14} {'CPU s':>7} {'peak RSS MB':>12}")
        for name, (cpu, hwm) in usage.items():
            print(f"{name:<14} {cpu:>7.1f} {hwm:>12.0f}")
        print(f"\nduplicate delivery: {stagings} staging(s) of the input; preprocess log events for the run: "
              f"run_lease_busy={events.count('run_lease_busy')}, run_already_staged={events.count('run_already_staged')}"
              f", run_lease_wait_ended={events.count('run_lease_wait_ended')}, "
              f"message_conflicted={events.count('message_conflicted')}")
        print(f"(load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
        if run.status != "SUCCEEDED" or summary.get("rows") != rows or stagings != 1:
            raise SystemExit("the run did not succeed with every row staged once")
    finally:
        stack.down(say=lambda line: None)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
