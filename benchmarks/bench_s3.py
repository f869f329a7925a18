"""S3 benchmark: the preprocess and postprocess workers' own code against a local S3 (moto server).

    python benchmarks/bench_s3.py            # 220k and 2.2M rows (BENCH_ROWS=220000 for one size)

Where bench_dataplane.py times the data plane on local files, this times what the workers run:
services.preprocess.staging.stage_input (one streaming GET of the input, prepare, upload of
rows.parquet and every chunk) and services.postprocess.collecting.assemble_results (download of
rows.parquet, one streaming GET per job output, assemble, upload of the result file), through
SyncObjects over the same boto3 client the workers build. Each case gets a fresh moto server, so
moto's memory (it holds every object) never carries over; uploading the input and writing the
simulated Bedrock outputs are set-up and not timed. Each timed step runs in its own child process,
so its peak RSS (from wait4's rusage) is its own; moto's CPU and memory are not counted in it,
but moto shares the machine's cores with the worker, as a local stack does.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

import bench_dataplane  # noqa: E402
from bench_dataplane import DATA, MODEL, TEMPLATE, bench_main, input_path, print_row  # noqa: E402

ACCOUNT = "123456789012"
FAKE_BEDROCK_JOB_ID = "benchjob0001"


def case_dir(rows: int, fmt: str) -> Path:
    return DATA / f"s3_{rows}_{fmt}"


def _settings(rows: int, fmt: str):
    from shared.settings import Settings

    return Settings(workdir=case_dir(rows, fmt) / "tmp")


def _objects(settings):
    from shared.adapters.aws import sync_client
    from shared.adapters.objects import SyncObjects

    return SyncObjects(sync_client(settings, "s3"))


def _run(rows: int, fmt: str, **update):
    from shared.domain.runs import Run
    from shared.domain.spec import RunSpec

    meta = json.loads((case_dir(rows, fmt) / "run.json").read_text())
    spec = RunSpec(model_id=MODEL, template=TEMPLATE, output_format=fmt)
    run = Run(run_id=meta["run_id"], spec=spec, input_uri=meta["input_uri"], origin="bench",
              source_key=meta["input_uri"].split("/", 3)[-1])
    return run.model_copy(update=update)


def _load_jobs(path: Path):
    from shared.domain.runs import Job

    return [Job.model_validate(item) for item in json.loads(path.read_text())]


def _save_jobs(path: Path, jobs) -> None:
    path.write_text(json.dumps([job.model_dump(mode="json") for job in jobs]))


# --- child cases ---------------------------------------------------------------------------------

def case_preprocess(rows: int, fmt: str) -> dict:
    from services.preprocess.staging import stage_input
    from shared.process_memory import keep_pandas_out

    keep_pandas_out()  # as the worker's main does: pandas is in this venv, not in a worker's

    settings = _settings(rows, fmt)
    objects = _objects(settings)
    run = _run(rows, fmt)
    start = time.perf_counter()
    staged = stage_input(run, objects=objects, settings=settings)
    seconds = time.perf_counter() - start
    _save_jobs(case_dir(rows, fmt) / "jobs.json", staged.jobs)
    return {"rows": staged.total_rows, "seconds": seconds, "jobs": len(staged.jobs),
            "on_demand": len(staged.on_demand_records)}


def case_fake_outputs(rows: int, fmt: str) -> dict:
    """Untimed set-up: each job's output object, as a finished Bedrock batch job writes it."""
    settings = _settings(rows, fmt)
    objects = _objects(settings)
    jobs = _load_jobs(case_dir(rows, fmt) / "jobs.json")
    done, errors = [], 0
    for job in jobs:
        out = []
        for row, line in enumerate(objects.lines(job.chunk_uri), start=job.first_row):
            line = line.rstrip(b"\n")
            if row % 100 == 3:
                out.append(line[:-1] + b',"error":{"errorCode":400,"errorMessage":"Malformed input request"}}')
                errors += 1
                continue
            out.append(line[:-1] + b',"modelOutput":{"id":"msg_1","type":"message","role":"assistant",'
                       b'"content":[{"type":"text","text":"The answer to row %d is: a short paragraph of '
                       b'reasoning, then the final answer."}],"stop_reason":"end_turn",'
                       b'"usage":{"input_tokens":%d,"output_tokens":21}}}' % (row, 120 + row % 50))
        if len(out) != job.records:
            raise SystemExit(f"chunk {job.chunk_uri} has {len(out)} lines, the job says {job.records}")
        random.Random(job.index).shuffle(out)  # Bedrock promises no order
        name = job.chunk_uri.rsplit("/", 1)[-1]
        objects.put(f"{job.output_uri}{FAKE_BEDROCK_JOB_ID}/{name}.out", b"\n".join(out) + b"\n")
        done.append(job.model_copy(update={
            "status": "COMPLETED", "bedrock_status": "Completed",
            "bedrock_arn": f"arn:aws:bedrock:{settings.region}:{ACCOUNT}:model-invocation-job/{FAKE_BEDROCK_JOB_ID}",
            "processed": job.records, "succeeded": len(out), "failed": 0}))
    _save_jobs(case_dir(rows, fmt) / "jobs.json", done)
    return {"jobs": len(done), "errors": errors}


def case_postprocess(rows: int, fmt: str) -> dict:
    from services.postprocess.collecting import assemble_results
    from shared.process_memory import keep_pandas_out

    keep_pandas_out()  # as the worker's main does: pandas is in this venv, not in a worker's

    settings = _settings(rows, fmt)
    objects = _objects(settings)
    jobs = _load_jobs(case_dir(rows, fmt) / "jobs.json")
    run = _run(rows, fmt, total_rows=rows, jobs_total=len(jobs), status="FINALIZING")
    start = time.perf_counter()
    uri, summary = assemble_results(run, jobs, objects=objects, settings=settings)
    seconds = time.perf_counter() - start
    return {"rows": summary.rows, "seconds": seconds, "succeeded": summary.succeeded, "failed": summary.failed,
            "result_bytes": objects.size(uri)}


CASES = {"preprocess": case_preprocess, "fake_outputs": case_fake_outputs, "postprocess": case_postprocess}


# --- the local S3 --------------------------------------------------------------------------------

def start_local_s3(log_dir: Path):
    """A fresh moto server with the buckets Settings names; this process's AWS env points at it."""
    import boto3

    from infra.processes import start_moto
    from shared.settings import Settings

    server = start_moto(log_dir)
    # Children inherit these: the workers' client factory reads AWS_ENDPOINT_URL itself.
    os.environ.update({"AWS_ENDPOINT_URL": server.url, "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"})
    os.environ.pop("AWS_PROFILE", None)
    settings = Settings()
    s3 = boto3.client("s3", region_name=settings.region)
    for bucket in (settings.inputs_bucket, settings.work_bucket, settings.results_bucket):
        s3.create_bucket(Bucket=bucket)
    return server, s3, settings


def bench_case(rows: int, fmt: str, table: list) -> None:
    workdir = case_dir(rows, fmt)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    server, s3, settings = start_local_s3(workdir)
    try:
        path = input_path(rows, fmt)
        key = f"bench/{path.name}"
        started = time.perf_counter()
        s3.upload_file(str(path), settings.inputs_bucket, key)
        print(f"  {fmt} {rows:,} rows: input uploaded to moto in {time.perf_counter() - started:.1f} s "
              "(not timed)", flush=True)
        (workdir / "run.json").write_text(json.dumps({"run_id": uuid.uuid4().hex,
                                                      "input_uri": f"s3://{settings.inputs_bucket}/{key}"}))
        result, rss = run_child("preprocess", rows, fmt)
        _check(result["rows"] == rows and result["on_demand"] == 0, f"preprocess staged {result}")
        table.append(("preprocess", fmt, rows, result["rows"] / result["seconds"], result["seconds"], rss))
        print_row(*table[-1], f"{result['jobs']} jobs")
        started = time.perf_counter()
        fake = run_child("fake_outputs", rows, fmt)[0]
        print(f"  {fmt} {rows:,} rows: simulated outputs of {fake['jobs']} jobs written in "
              f"{time.perf_counter() - started:.1f} s (not timed)", flush=True)
        result, rss = run_child("postprocess", rows, fmt)
        _check(result["rows"] == rows and result["failed"] == fake["errors"]
               and result["succeeded"] == rows - fake["errors"], f"postprocess assembled {result}")
        table.append(("postprocess", fmt, rows, result["rows"] / result["seconds"], result["seconds"], rss))
        print_row(*table[-1], f"{result['failed']:,} failed, result {result['result_bytes'] / 1e6:,.0f} MB")
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise SystemExit(f"wrong counts: {what}")


def run_child(case: str, rows: int, fmt: str) -> tuple[dict, float]:
    return bench_dataplane.run_child(case, rows, fmt, script=__file__)


def main() -> None:
    bench_main(CASES, bench_case, "against the local S3 (moto server), through stage_input and assemble_results:")


if __name__ == "__main__":
    main()
