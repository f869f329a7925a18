"""Data-plane benchmark: prepare and assemble on SimpleCoT-shaped data, CSV and Parquet.

    python benchmarks/bench_dataplane.py            # 220k and 2.2M rows (BENCH_ROWS=220000 for one size)

Each measured case runs in its own child process, so its peak RSS (from wait4's rusage) is its
own. Assemble reads simulated batch output: every record's line echoes its modelInput (as Bedrock
does) plus an Anthropic modelOutput, in reverse order, with 1% errors and 0.5% missing records.
Input is generated once into benchmarks/.data with ../shared/bench/gen_simplecot.py.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = HERE / ".data"
# ../shared beside the checkout, as the project's shared folder is laid out.
GENERATOR = Path(os.environ.get("BENCH_GENERATOR", Path(__file__).resolve().parents[2] / "shared" / "bench" / "gen_simplecot.py"))
MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
TEMPLATE = "Question: {{ source }}\nReasoning: {{ rationale }}"
TARGET_ROWS_S = 100_000
# Issue 11's targets against the local S3: preprocess >= 90k rows/s, postprocess >= 100k.
TARGET_ROWS_S_BY_STEP = {"preprocess": 90_000, "postprocess": 100_000}
TARGET_RSS_MB = 300


def input_path(rows: int, fmt: str) -> Path:
    return DATA / f"simplecot_{rows}.{fmt}"


def ensure_input(rows: int) -> None:
    if input_path(rows, "csv").exists() and input_path(rows, "parquet").exists():
        return
    DATA.mkdir(parents=True, exist_ok=True)
    print(f"generating {rows:,} rows with {GENERATOR} (a few minutes for 2.2M) ...", flush=True)
    subprocess.run([sys.executable, str(GENERATOR), str(rows), str(DATA / f"simplecot_{rows}")], check=True)


def work_dir(rows: int, fmt: str) -> Path:
    return DATA / f"work_{rows}_{fmt}"


# --- child cases ---------------------------------------------------------------------------------

def case_prepare(rows: int, fmt: str) -> dict:
    from shared.dataplane.prepare import PrepareSpec, prepare

    workdir = work_dir(rows, fmt)
    shutil.rmtree(workdir, ignore_errors=True)
    spec = PrepareSpec(model_id=MODEL, template=TEMPLATE)
    path = input_path(rows, fmt)
    start = time.perf_counter()
    # Unbuffered and read once, front to back, like an S3 StreamingBody.
    with open(path, "rb", buffering=0) as stream:
        prepared = prepare(stream, name=path.name, spec=spec, workdir=workdir)
    seconds = time.perf_counter() - start
    plan = [(c.first_row, c.end_row, c.byte_offset, c.byte_length) for c in prepared.plan.chunks]
    (workdir / "plan.json").write_text(json.dumps(plan))
    return {"rows": prepared.total_rows, "seconds": seconds, "chunks": len(plan),
            "vectorized": prepared.vectorized}


def case_fake_outputs(rows: int, fmt: str) -> dict:
    """Untimed set-up: one .jsonl.out per chunk, as a batch job would write it."""
    workdir = work_dir(rows, fmt)
    plan = json.loads((workdir / "plan.json").read_text())
    with open(workdir / "records.jsonl", "rb") as spool:
        for index, (first, end, offset, length) in enumerate(plan):
            spool.seek(offset)
            lines = spool.read(length).splitlines()
            out = []
            for i, line in enumerate(lines):
                row = first + i
                if row % 200 == 7:
                    continue  # missing: never processed
                if row % 100 == 3:
                    out.append(line[:-1] + b',"error":{"errorCode":400,"errorMessage":"Malformed input request"}}')
                    continue
                out.append(line[:-1] + b',"modelOutput":{"id":"msg_1","type":"message","role":"assistant",'
                           b'"content":[{"type":"text","text":"The answer to row %d is: a short paragraph of '
                           b'reasoning, then the final answer."}],"stop_reason":"end_turn",'
                           b'"usage":{"input_tokens":%d,"output_tokens":21}}}' % (row, 120 + row % 50))
            out.reverse()  # Bedrock promises no order
            (workdir / f"chunk-{index:05d}.jsonl.out").write_bytes(b"\n".join(out) + b"\n")
    return {"chunks": len(plan)}


def case_assemble(rows: int, fmt: str) -> dict:
    from shared.dataplane.assemble import assemble
    from shared.dataplane.splitter import Chunk, SplitPlan

    workdir = work_dir(rows, fmt)
    spans = json.loads((workdir / "plan.json").read_text())
    chunks = [Chunk(i, a, b, b - a, n, o) for i, (a, b, o, n) in enumerate(spans)]
    plan = SplitPlan(chunks, False, spans[-1][1], sum(s[3] for s in spans))

    def results_for_chunk(chunk: Chunk):
        with open(workdir / f"chunk-{chunk.index:05d}.jsonl.out", "rb") as f:
            return list(f)  # raw lines: assemble parses them

    out_path = workdir / f"output.{fmt}"
    start = time.perf_counter()
    with open(out_path, "wb") as out:
        summary = assemble(workdir / "rows.parquet", plan, results_for_chunk, out_format=fmt,
                           out_stream=out, family="anthropic")
    seconds = time.perf_counter() - start
    return {"rows": summary.rows, "seconds": seconds, "succeeded": summary.succeeded, "failed": summary.failed}


CASES = {"prepare": case_prepare, "fake_outputs": case_fake_outputs, "assemble": case_assemble}


def run_child(case: str, rows: int, fmt: str, script: str = __file__) -> tuple[dict, float]:
    """Run one case of `script` in a fresh interpreter; its result and its own peak RSS in MB."""
    # The workers' environment: glibc's per-thread malloc arenas otherwise keep threads' buffers.
    proc = subprocess.Popen([sys.executable, script, "--case", case, "--rows", str(rows), "--fmt", fmt],
                            stdout=subprocess.PIPE, cwd=ROOT, env={**os.environ, "MALLOC_ARENA_MAX": "2"})
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"case {case} {rows} {fmt} failed with exit code {proc.returncode}")
    return json.loads(stdout.decode().strip().splitlines()[-1]), usage.ru_maxrss / 1024


def bench_main(cases: dict, bench_one, title: str) -> None:
    """`--case` runs one timed case (in the child); otherwise every size and format, then a table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--case", choices=sorted(cases))
    parser.add_argument("--rows", type=int)
    parser.add_argument("--fmt", choices=["csv", "parquet"])
    args = parser.parse_args()
    if args.case:
        print(json.dumps(cases[args.case](args.rows, args.fmt)))
        return
    sizes = [int(s) for s in os.environ.get("BENCH_ROWS", "220000,2200000").split(",")]
    formats = os.environ.get("BENCH_FORMATS", "csv,parquet").split(",")
    table: list = []
    for rows in sizes:
        ensure_input(rows)
        for fmt in formats:
            bench_one(rows, fmt, table)
    print()
    print(title)
    print(f"{'step':<11} {'format':<8} {'rows':>10} {'rows/s':>10} {'seconds':>8} {'peak RSS MB':>12}  target")
    for step, fmt, rows, rate, seconds, rss in table:
        ok = rate >= TARGET_ROWS_S_BY_STEP.get(step, TARGET_ROWS_S) and rss < TARGET_RSS_MB
        print(f"{step:<11} {fmt:<8} {rows:>10,} {rate:>10,.0f} {seconds:>8.1f} {rss:>12.0f}  {'ok' if ok else 'MISSED'}")
    rates = ", ".join(f"{step} >= {rate:,}" for step, rate in TARGET_ROWS_S_BY_STEP.items()
                      if any(row[0] == step for row in table))
    print(f"(targets: {rates or f'>= {TARGET_ROWS_S:,}'} rows/s, peak RSS < {TARGET_RSS_MB} MB, flat across sizes)")


def print_row(step, fmt, rows, rate, seconds, rss, note="") -> None:
    print(f"  {step} {fmt} {rows:,} rows: {rate:,.0f} rows/s, {seconds:.1f} s, peak RSS {rss:.0f} MB"
          + (f" ({note})" if note else ""), flush=True)


def bench_one(rows: int, fmt: str, table: list) -> None:
    result, rss = run_child("prepare", rows, fmt)
    table.append(("prepare", fmt, rows, result["rows"] / result["seconds"], result["seconds"], rss))
    print_row(*table[-1])
    run_child("fake_outputs", rows, fmt)
    result, rss = run_child("assemble", rows, fmt)
    table.append(("assemble", fmt, rows, result["rows"] / result["seconds"], result["seconds"], rss))
    print_row(*table[-1])
    shutil.rmtree(work_dir(rows, fmt), ignore_errors=True)


def main() -> None:
    bench_main(CASES, bench_one, "on local files, through prepare and assemble:")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
