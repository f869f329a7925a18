"""Side by side with the public sample's preprocess and postprocess, against the same local S3.

    python benchmarks/bench_sample.py          # 220k rows, CSV (BENCH_ROWS, BENCH_FORMATS, BENCH_REPEATS)

The sample is aws-samples/amazon-bedrock-samples, poc-to-prod/bedrock-batch-orchestrator, its
Lambda functions lambda/preprocess.py (commit bc31340fe9a5653d7eb5f4f15550cdc80468840d),
lambda/postprocess.py (3e97364a34873c7e543bb98c66e76eea4a510638), lambda/processor.py and
lambda/utils.py. Its logic is reproduced below, not its code (nor awswrangler, which it reads and
writes S3 with: pandas and pyarrow over boto3 do the same work here):

- preprocess: the input is read in chunks of `max_records_per_job` rows with pandas (CSV) or
  pyarrow (Parquet: the file is read whole, then batch by batch); each chunk gets a uuid4
  record_id per row, its rows become dicts, each prompt is the template filled with str.format,
  each record the Anthropic Messages body built as a dict and written with json.dumps; the chunk's
  JSONL is one PutObject, and the chunk itself is written as snappy Parquet for the join.
- postprocess (one Lambda per job, run here one after the other): the job's input Parquet is read,
  its output JSONL is read whole, split on '}\\n{' and parsed record by record, each record's text
  (or None for an error) is taken, the outputs are merged with the input on record_id, and the
  result is written as snappy Parquet.

Quarry's side is the workers' own code, as in bench_s3.py: stage_input (50,000 records a job) and
assemble_results. Runs alternate (Quarry, the sample at 50,000, the sample at 1,000 records a job,
and again), each in its own child process for its own peak RSS, against one moto server per size
and format (objects written by a run are deleted before the next). Bedrock's outputs (shuffled, 1%
errors) are simulated for each side's own job files and not timed.
"""
from __future__ import annotations

import io
import json
import os
import random
import shutil
import statistics
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

import bench_dataplane  # noqa: E402
import bench_s3  # noqa: E402
from bench_dataplane import ensure_input, input_path  # noqa: E402

SAMPLE_TEMPLATE = "Question: {source}\nReasoning: {rationale}"  # bench_dataplane.TEMPLATE in str.format
SAMPLE_PREFIX = "sample"
SIZES = (50_000, 1_000)


def _s3():
    import boto3
    from shared.adapters.aws import client_config
    from shared.settings import Settings

    return boto3.client("s3", config=client_config(Settings()))


def _settings():
    from shared.settings import Settings

    return Settings()


# --- the sample, reproduced ------------------------------------------------------------------------

def _sample_chunks(s3, bucket: str, key: str, fmt: str, per_job: int):
    import pandas as pd
    import pyarrow.parquet as pq

    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    if fmt == "csv":
        yield from pd.read_csv(body, chunksize=per_job)
    else:
        table_file = pq.ParquetFile(io.BytesIO(body.read()))
        for batch in table_file.iter_batches(batch_size=per_job):
            yield batch.to_pandas()


def _anthropic_record(prompt: str, record_id: str) -> dict:
    return {"recordId": record_id, "modelInput": {
        "anthropic_version": "bedrock-2023-05-31", "max_tokens": 1024,
        "messages": [{"role": "user", "content": [{"type": "text", "text": prompt}]}]}}


def case_sample_preprocess(rows: int, fmt: str, per_job: int) -> dict:
    s3 = _s3()
    settings = _settings()
    meta = json.loads((bench_s3.case_dir(rows, fmt) / "run.json").read_text())
    bucket, key = meta["input_uri"].removeprefix("s3://").split("/", 1)
    work = settings.work_bucket
    start = time.perf_counter()
    jobs, total = [], 0
    for index, frame in enumerate(_sample_chunks(s3, bucket, key, fmt, per_job)):
        if "record_id" not in frame.columns:
            frame["record_id"] = [str(uuid.uuid4()) for _ in range(len(frame))]
        records = [_anthropic_record(SAMPLE_TEMPLATE.format(**row), row["record_id"])
                   for row in frame.to_dict("records")]
        input_key = f"{SAMPLE_PREFIX}/{per_job}/inputs_json/{index:04d}.jsonl"
        s3.put_object(Bucket=work, Key=input_key, Body="\n".join(json.dumps(r) for r in records))
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False, compression="snappy")
        parquet_key = f"{SAMPLE_PREFIX}/{per_job}/inputs_parquet/{index:04d}.snappy.parquet"
        s3.put_object(Bucket=work, Key=parquet_key, Body=buffer.getvalue())
        jobs.append({"input_key": input_key, "parquet_key": parquet_key})
        total += len(frame)
    seconds = time.perf_counter() - start
    (bench_s3.case_dir(rows, fmt) / f"sample_jobs_{per_job}.json").write_text(json.dumps(jobs))
    return {"rows": total, "seconds": seconds, "jobs": len(jobs)}


def case_sample_outputs(rows: int, fmt: str, per_job: int) -> dict:
    """Untimed: each sample job's output, as Bedrock writes it (shuffled, 1% errors)."""
    s3 = _s3()
    work = _settings().work_bucket
    jobs = json.loads((bench_s3.case_dir(rows, fmt) / f"sample_jobs_{per_job}.json").read_text())
    errors = 0
    for index, job in enumerate(jobs):
        lines = s3.get_object(Bucket=work, Key=job["input_key"])["Body"].read().split(b"\n")
        out = []
        for row, line in enumerate(lines):
            if row % 100 == 3:
                out.append(line[:-1] + b',"error":{"errorCode":400,"errorMessage":"Malformed input request"}}')
                errors += 1
            else:
                out.append(line[:-1] + b',"modelOutput":{"id":"msg_1","type":"message","role":"assistant",'
                           b'"content":[{"type":"text","text":"The answer is: a short paragraph of reasoning, then '
                           b'the final answer."}],"stop_reason":"end_turn","usage":{"input_tokens":130,'
                           b'"output_tokens":21}}}')
        random.Random(index).shuffle(out)
        job["output_key"] = f"{SAMPLE_PREFIX}/{per_job}/outputs_json/{index:04d}/job/{index:04d}.jsonl.out"
        s3.put_object(Bucket=work, Key=job["output_key"], Body=b"\n".join(out))
    (bench_s3.case_dir(rows, fmt) / f"sample_jobs_{per_job}.json").write_text(json.dumps(jobs))
    return {"jobs": len(jobs), "errors": errors}


def case_sample_postprocess(rows: int, fmt: str, per_job: int) -> dict:
    import pandas as pd

    s3 = _s3()
    work = _settings().work_bucket
    jobs = json.loads((bench_s3.case_dir(rows, fmt) / f"sample_jobs_{per_job}.json").read_text())
    start = time.perf_counter()
    total = failed = 0
    for index, job in enumerate(jobs):
        input_frame = pd.read_parquet(io.BytesIO(s3.get_object(Bucket=work, Key=job["parquet_key"])["Body"].read()))
        text = s3.get_object(Bucket=work, Key=job["output_key"])["Body"].read().decode("utf-8")
        pieces = text.split("}\n{")
        if len(pieces) > 1:
            pieces = [pieces[0] + "}"] + ["{" + p + "}" for p in pieces[1:-1]] + ["{" + pieces[-1]]
        outputs = []
        for record in (json.loads(p) for p in pieces):
            model_output = record.get("modelOutput", {"content": [{"text": None}]})
            outputs.append({"record_id": record["recordId"], "response": model_output["content"][-1]["text"]})
        joined = pd.DataFrame(outputs).merge(input_frame, on="record_id")
        buffer = io.BytesIO()
        joined.to_parquet(buffer, index=False, compression="snappy")
        s3.put_object(Bucket=work, Key=f"{SAMPLE_PREFIX}/{per_job}/output_parquet/{index:04d}.snappy.parquet",
                      Body=buffer.getvalue())
        total += len(joined)
        failed += int(joined["response"].isna().sum())
    return {"rows": total, "seconds": time.perf_counter() - start, "failed": failed}


CASES = {
    "preprocess": bench_s3.case_preprocess, "fake_outputs": bench_s3.case_fake_outputs,
    "postprocess": bench_s3.case_postprocess,
    **{f"sample_preprocess_{n}": (lambda rows, fmt, n=n: case_sample_preprocess(rows, fmt, n)) for n in SIZES},
    **{f"sample_outputs_{n}": (lambda rows, fmt, n=n: case_sample_outputs(rows, fmt, n)) for n in SIZES},
    **{f"sample_postprocess_{n}": (lambda rows, fmt, n=n: case_sample_postprocess(rows, fmt, n)) for n in SIZES},
}


# --- the alternating runs --------------------------------------------------------------------------

def _clear_work(s3, bucket: str) -> None:
    """Delete what the last run wrote (untimed), so moto's memory and store stay the same for each run."""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        for start in range(0, len(keys), 1000):
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys[start:start + 1000]})


def bench_pair(rows: int, fmt: str, repeats: int, results: dict) -> None:
    workdir = bench_s3.case_dir(rows, fmt)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    server, s3, settings = bench_s3.start_local_s3(workdir)
    try:
        path = input_path(rows, fmt)
        key = f"bench/{path.name}"
        s3.upload_file(str(path), settings.inputs_bucket, key)
        (workdir / "run.json").write_text(json.dumps({"run_id": uuid.uuid4().hex,
                                                      "input_uri": f"s3://{settings.inputs_bucket}/{key}"}))
        for repeat in range(repeats):
            for side in ("quarry", *(f"sample_{n}" for n in SIZES)):
                _clear_work(s3, settings.work_bucket)
                _clear_work(s3, settings.results_bucket)
                pre, post = ("preprocess", "postprocess") if side == "quarry" else \
                    (f"sample_preprocess_{side[7:]}", f"sample_postprocess_{side[7:]}")
                fake = "fake_outputs" if side == "quarry" else f"sample_outputs_{side[7:]}"
                load = os.getloadavg()[0]
                result, rss = bench_dataplane.run_child(pre, rows, fmt, script=__file__)
                _check(result["rows"] == rows, f"{side} preprocess wrote {result['rows']} rows")
                results.setdefault((side, "preprocess", fmt, rows), []).append((result["seconds"], rss, load))
                _say(side, "preprocess", fmt, rows, result["seconds"], rss, load, f"{result['jobs']} jobs")
                run_child_quiet(fake, rows, fmt)
                load = os.getloadavg()[0]
                result, rss = bench_dataplane.run_child(post, rows, fmt, script=__file__)
                _check(result["rows"] == rows, f"{side} postprocess joined {result['rows']} rows")
                results.setdefault((side, "postprocess", fmt, rows), []).append((result["seconds"], rss, load))
                _say(side, "postprocess", fmt, rows, result["seconds"], rss, load, f"{result['failed']} failed")
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def run_child_quiet(case: str, rows: int, fmt: str) -> None:
    bench_dataplane.run_child(case, rows, fmt, script=__file__)


def _say(side, step, fmt, rows, seconds, rss, load, note) -> None:
    print(f"  {side:<13} {step:<11} {fmt} {rows:,}: {rows / seconds:,.0f} rows/s, {seconds:.1f} s, peak RSS "
          f"{rss:.0f} MB, load {load:.1f} ({note})", flush=True)


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise SystemExit(f"wrong counts: {what}")


def main() -> None:
    if "--case" in sys.argv:
        bench_dataplane.bench_main(CASES, None, "")
        return
    sizes = [int(s) for s in os.environ.get("BENCH_ROWS", "220000").split(",")]
    formats = os.environ.get("BENCH_FORMATS", "csv").split(",")
    repeats = int(os.environ.get("BENCH_REPEATS", "2"))
    results: dict = {}
    for rows in sizes:
        ensure_input(rows)
        for fmt in formats:
            bench_pair(rows, fmt, repeats, results)
    print("\nQuarry against the public sample (median of the alternating runs; ratio = Quarry's rows/s over the "
          "sample's, memory = Quarry's peak RSS over the sample's):")
    print(f"{'step':<11} {'format':<7} {'rows':>9} {'side':<13} {'rows/s':>9} {'peak MB':>8} {'speed x':>8} {'memory x':>9}")
    for (side, step, fmt, rows), runs in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][3], kv[0][0])):
        seconds = statistics.median(r[0] for r in runs)
        rss = max(r[1] for r in runs)
        quarry = results[("quarry", step, fmt, rows)]
        q_seconds, q_rss = statistics.median(r[0] for r in quarry), max(r[1] for r in quarry)
        print(f"{step:<11} {fmt:<7} {rows:>9,} {side:<13} {rows / seconds:>9,.0f} {rss:>8.0f} "
              f"{seconds / q_seconds:>8.2f} {q_rss / rss:>9.2f}")
    print(f"(load average during the runs: {min(r[2] for v in results.values() for r in v):.1f}-"
          f"{max(r[2] for v in results.values() for r in v):.1f} on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
