"""`make demo-customize`: a real fine-tune through Quarry, end to end, on this machine alone.

Brings the local stack up with the real engine (SmolLM2-135M-Instruct behind Titan Text Lite; the
local Bedrock's real trainer fine-tunes its last 4 layers on CPU), puts DialogSum rows shipped
beside this file into the inputs bucket (the first 200 rows of dialogsum_sample.jsonl, from
DialogSum's train split, to train on; 40 rows of its validation split, none of them in the
training data, held out for the gate), and drops a customization spec under customizations/.
Quarry checks every record, estimates the cost, creates the customization job, provisions a
throughput for the custom model, and gates it: the custom model against its base on the held-out
rows, temperature 0, ROUGE-L, a paired bootstrap interval of the difference. Prints the verdict
with its interval, the email, and the time it all took. The stack stays up afterwards
(`quarry hosting list`, `quarry local down`).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path

import boto3
import yaml
from rich.console import Console

from infra.local_stack.mailsink import read_mail
from infra.local_stack.stack import LocalStack, StackConfig
from services.cli.customizations import follow_customization, show_outcome
from shared.adapters.aws import async_clients
from shared.adapters.store import RunStore
from shared.settings import Settings

HERE = Path(__file__).parent
TRAIN = HERE / "dialogsum_sample.jsonl"  # DialogSum train rows 0..299
HELD_OUT = HERE / "dialogsum_held_out.jsonl"  # DialogSum validation rows 0..39
BASE = "amazon.titan-text-lite-v1"  # the local Bedrock serves and fine-tunes SmolLM2 behind it
console = Console()


def spec(train_uri: str, held_out_uri: str, stamp: int, *, epochs: int, min_effect: float) -> dict:
    # The hyperparameters measured on 2 cores: batch 4 at 1e-4 for one epoch of 200 rows is about
    # 50 steps and 2 minutes, and lifts held-out ROUGE-L from about 0.2 to about 0.3.
    return {
        "name": "dialogsum-demo",
        "base_model": BASE,
        "type": "FINE_TUNING",
        "training_data": train_uri,
        "hyperparameters": {"epochCount": str(epochs), "batchSize": "4", "learningRate": "0.0001",
                            "learningRateWarmupSteps": "5"},
        "custom_model_name": f"smollm2-dialogsum-{stamp}",
        "hosting": {"type": "provisioned", "model_units": 1},
        "gate": {"data": held_out_uri, "metrics": ["rougeL"], "min_effect": min_effect, "max_tokens": 64},
        "budget_usd": 25,
        "registry": "demo-dialogsum",
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m infra.demo.customize", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200, help="training rows (8..300)")
    parser.add_argument("--held-out", type=int, default=40, help="held-out rows for the gate (2..40)")
    parser.add_argument("--epochs", type=int, default=1, help="epochCount (1..10)")
    parser.add_argument("--min-effect", type=float, default=0.02, help="ROUGE-L the custom model must win by")
    parser.add_argument("--engine", choices=["real", "fast"], default="real")
    args = parser.parse_args()
    if not 8 <= args.rows <= 300 or not 2 <= args.held_out <= 40 or not 1 <= args.epochs <= 10:
        parser.error("--rows must be 8..300, --held-out 2..40 and --epochs 1..10 (the shipped rows)")
    started = time.monotonic()
    os.environ.setdefault("LOCAL_BEDROCK_BATCH_SIZE", "16")
    # The gate invokes the provisioned custom model (and its base) on demand, this many calls at a
    # time; the local Bedrock generates concurrent calls together, so 16 make batches of up to 16.
    os.environ.setdefault("QUARRY_ON_DEMAND_CONCURRENCY", "16")
    stack = LocalStack(StackConfig(engine=args.engine))
    console.print(f"[bold]Quarry customization demo[/]: bringing the local stack up ({args.engine} engine)")
    stack.up(say=lambda line: console.print(f"  [dim]·[/] {line}"))
    os.environ.update(stack.config.env())

    settings = Settings()
    s3 = boto3.client("s3")
    stamp = int(time.time())
    train_key, held_key = f"tuning/dialogsum-{stamp}/train.jsonl", f"tuning/dialogsum-{stamp}/held_out.jsonl"
    s3.put_object(Bucket=settings.inputs_bucket, Key=train_key, Body=_lines(TRAIN, args.rows))
    s3.put_object(Bucket=settings.inputs_bucket, Key=held_key, Body=_lines(HELD_OUT, args.held_out))
    bucket = settings.inputs_bucket
    body = spec(f"s3://{bucket}/{train_key}", f"s3://{bucket}/{held_key}", stamp, epochs=args.epochs,
                min_effect=args.min_effect)
    spec_key = f"customizations/dialogsum-demo-{stamp}.yaml"
    s3.put_object(Bucket=bucket, Key=spec_key, Body=yaml.safe_dump(body, sort_keys=False).encode())
    console.print(f"Dropped the customization spec s3://{bucket}/{spec_key}: fine-tune {BASE} on {args.rows} "
                  f"DialogSum rows, gate on {args.held_out} held-out rows (ROUGE-L, min effect {args.min_effect:g})")
    console.print(yaml.safe_dump(body, sort_keys=False), markup=False, highlight=False)

    run = asyncio.run(_follow(f"s3://{bucket}/{spec_key}", settings))
    took = time.monotonic() - started
    console.rule("Outcome")
    show_outcome(run, console)
    gate = (run.summary or {}).get("gate") or {}
    if gate.get("ci"):
        means = gate.get("means") or {}
        console.print(f"\n[bold]Verdict: {'KEPT' if gate.get('passed') else 'NOT KEPT'}[/]  ROUGE-L custom "
                      f"{means.get('custom', float('nan')):.3f} vs base {means.get('base', float('nan')):.3f} on "
                      f"{gate.get('n')} held-out rows: difference {gate['difference']:+.3f}, 95% CI "
                      f"[{gate['ci'][0]:+.3f}, {gate['ci'][1]:+.3f}], minimum effect {gate['min_effect']:g}")
    mail = _mail(stack, run.run_id)
    if mail is not None:
        console.rule(f"Email: {mail['subject']}")
        console.print(mail["body"], markup=False, highlight=False)
        console.rule()
    console.print(f"Done in {took / 60:.1f} minutes ({took:.0f} s, the stack's start included): "
                  f"{asyncio.run(_phases(run, settings))}.")
    console.print("The stack is still up: `quarry hosting list` (a kept model's throughput, and "
                  "`quarry hosting delete ARN`), `quarry registry show demo-dialogsum`, `quarry local down`.")


def _lines(path: Path, count: int) -> bytes:
    return b"".join(line + b"\n" for line in path.read_bytes().splitlines()[:count])


async def _follow(spec_uri: str, settings: Settings):
    """The run the drop-in started (found by its source), then its steps as they change."""
    async with async_clients(settings, "dynamodb") as aws:
        store = RunStore(aws["dynamodb"], settings.table)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            run = next((r for r in await store.list_runs(limit=30)
                        if r.kind == "customize" and r.source_key.startswith(spec_uri)), None)
            if run is not None:
                break
            await asyncio.sleep(1)
        else:
            raise SystemExit("no run started from the spec in 2 minutes; see the logs under .local/stack/logs")
    console.print(f"Customization run {run.run_id}:")
    try:
        # Minutes on idle cores; far longer when other work shares them.
        return await asyncio.wait_for(follow_customization(run.run_id, settings, console), timeout=3600)
    except TimeoutError:
        raise SystemExit(f"the customization {run.run_id} did not finish in an hour; `quarry status {run.run_id}`, "
                         "and the logs under .local/stack/logs") from None


async def _phases(run, settings: Settings) -> str:
    """How long the job, the hosting's coming up and the gate took, from the table's timestamps."""
    async with async_clients(settings, "dynamodb") as aws:
        store = RunStore(aws["dynamodb"], settings.table)
        jobs = {job.job_key: job for job in await store.list_jobs(run.run_id)}
        gate = await store.get_run(run.children["gate"]) if "gate" in run.children else None
    parts = []
    if "customization" in jobs:
        job = jobs["customization"]
        parts.append(f"pre-flight {(job.created_at - run.created_at).total_seconds():.0f} s")
        hosting = jobs.get("hosting")
        ended = hosting.created_at if hosting else run.updated_at
        parts.append(f"customization job {(ended - job.created_at).total_seconds() / 60:.1f} min")
        if hosting and gate:
            parts.append(f"hosting up {(gate.created_at - hosting.created_at).total_seconds():.0f} s")
    if gate is not None:
        parts.append(f"gate {(gate.updated_at - gate.created_at).total_seconds() / 60:.1f} min")
    return ", ".join(parts) or "no steps"


def _mail(stack: LocalStack, run_id: str) -> dict | None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = next((m for m in reversed(read_mail(stack.config.maildir)) if run_id in m["body"]), None)
        if found is not None:
            return found
        time.sleep(0.5)
    return None


if __name__ == "__main__":
    main()
