"""The CLI's commands over Quarry's adapters: the same store, queues and objects the workers use."""
from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from shared.adapters.aws import async_clients, sync_client
from shared.adapters.objects import SyncObjects
from shared.adapters.queues import Queues
from shared.adapters.store import RunStore
from shared.domain.runs import Job, Run
from shared.domain.spec import Profiles, SpecOverrides, resolve_spec
from shared.errors import PermanentError
from shared.messages import CancelRun, StartRun, new_id
from shared.settings import Settings


async def submit(args: argparse.Namespace, *, console: Console, out: Console) -> None:
    settings = Settings()
    params = {k: v for k, v in {"max_tokens": args.max_tokens, "temperature": args.temperature}.items() if v is not None}
    overrides = SpecOverrides(model_id=args.model_id, template=args.template, system=args.system,
                              params=params or None, output_format=args.output_format, name=args.name,
                              invocation="Converse" if args.converse else None)
    profile = Profiles.load(settings.profiles_path).get(args.profile) if args.profile else None
    spec = resolve_spec(profile, overrides, where="the command line")
    run_id = new_id()
    objects = SyncObjects(sync_client(settings, "s3"))
    if args.input.startswith("s3://"):
        input_uri = args.input
        if objects.size(input_uri) is None:
            raise PermanentError(f"{input_uri} does not exist")
    else:
        path = Path(args.input)
        if not path.is_file():
            raise PermanentError(f"{path} is not a file")
        input_uri = f"s3://{settings.inputs_bucket}/uploads/{run_id}/{path.name}"
        console.print(f"uploading {path} ({path.stat().st_size:,} bytes) to {input_uri}")
        await asyncio.to_thread(objects.upload_file, str(path), input_uri)
    async with async_clients(settings, "sqs", "dynamodb") as aws:
        await Queues(aws["sqs"], settings).send("preprocess", StartRun(
            run_id=run_id, input_uri=input_uri, spec=spec, origin="cli", source_key=f"cli:{run_id}"))
    console.print(f"run [bold]{run_id}[/] submitted")
    out.print(run_id)
    if args.follow:
        await _follow(run_id, settings, console)


async def status(args: argparse.Namespace, *, console: Console, out: Console) -> None:
    settings = Settings()
    if args.run_id is None:
        async with async_clients(settings, "dynamodb", "sqs") as aws:
            runs = await RunStore(aws["dynamodb"], settings.table).list_runs(limit=20)
            parked = await _parked_messages(Queues(aws["sqs"], settings))
        table = Table("run", "status", "created", "rows", "input")
        for run in runs:
            rows = f"{run.total_rows:,}" if run.total_rows is not None else "-"
            table.add_row(run.run_id, run.status, run.created_at.strftime("%Y-%m-%d %H:%M:%S"), rows, run.input_uri)
        out.print(table)
        for queue, count in parked.items():
            console.print(f"[yellow]warning:[/] {count} message(s) parked in {settings.queue_name(queue)}: "
                          "a worker could not handle them; its log says why")
        return
    if args.follow:
        await _follow(args.run_id, settings, console)
    else:
        run, jobs = await _load(args.run_id, settings)
        out.print(_describe(run, jobs))


async def _parked_messages(queues: Queues) -> dict[str, int]:
    """Messages waiting in each worker's dead-letter queue, where there are any."""
    from shared.bootstrap import WORKERS

    parked = {}
    for worker in WORKERS:
        url = await queues.url(f"{worker}-dlq")
        attributes = await queues.attributes(url, "ApproximateNumberOfMessages")
        count = int(attributes.get("ApproximateNumberOfMessages", "0"))
        if count:
            parked[f"{worker}-dlq"] = count
    return parked


async def results(args: argparse.Namespace, *, console: Console, out: Console) -> None:
    settings = Settings()
    run, _ = await _load(args.run_id, settings)
    if not run.result_uri:
        raise PermanentError(f"run {run.run_id} is {run.status} and has no results yet"
                             + (f": {run.error}" if run.error else ""))
    objects = SyncObjects(sync_client(settings, "s3"))
    body = objects.open(run.result_uri)
    if args.out:
        with open(args.out, "wb") as target:
            for chunk in iter(lambda: body.read(1024 * 1024), b""):
                target.write(chunk)
        console.print(f"wrote {run.result_uri} to {args.out}")
    else:
        for chunk in iter(lambda: body.read(1024 * 1024), b""):
            sys.stdout.buffer.write(chunk)


async def cancel(args: argparse.Namespace, *, console: Console, out: Console) -> None:
    settings = Settings()
    run, _ = await _load(args.run_id, settings)
    if run.terminal:
        raise PermanentError(f"run {run.run_id} already ended {run.status}")
    async with async_clients(settings, "sqs") as aws:
        await Queues(aws["sqs"], settings).send("submit", CancelRun(run_id=run.run_id))
    console.print(f"cancelling run {run.run_id}: its jobs are being stopped; partial results follow")


async def mail(args: argparse.Namespace, *, console: Console, out: Console) -> None:
    from infra.local_stack.mailsink import read_mail
    from infra.local_stack.stack import StackConfig

    messages = read_mail(StackConfig().maildir)
    if not messages:
        console.print("no mail yet")
        return
    for message in messages[-args.last:]:
        out.rule(f"{message['subject']}")
        out.print(f"From: {message['from']}\nTo: {message['to']}\nDate: {message['date']}\n")
        out.print(message["body"], markup=False, highlight=False)


async def _load(run_id: str, settings: Settings) -> tuple[Run, list[Job]]:
    async with async_clients(settings, "dynamodb") as aws:
        store = RunStore(aws["dynamodb"], settings.table)
        run = await store.get_run(run_id)
        if run is None:
            raise PermanentError(f"no run {run_id}; `quarry status` lists recent runs")
        return run, await store.list_jobs(run_id)


def _describe(run: Run, jobs: list[Job]) -> str:
    states = Counter(job.status for job in jobs)
    processed = sum(job.processed for job in jobs if job.attempt == 0)
    lines = [f"run {run.run_id}: {run.status}", f"input: {run.input_uri}",
             f"rows: {run.total_rows if run.total_rows is not None else '?'}",
             "jobs: " + (", ".join(f"{count} {state}" for state, count in sorted(states.items())) or "none"),
             f"records processed: {processed:,}"]
    if run.result_uri:
        lines.append(f"results: {run.result_uri}")
    if run.summary:
        lines.append(f"succeeded {run.summary['succeeded']:,}, failed {run.summary['failed']:,}")
    if run.error:
        lines.append(f"error: {run.error}")
    return "\n".join(lines)


async def _follow(run_id: str, settings: Settings, console: Console) -> None:
    """A live progress bar: jobs by state and records done, until the run ends."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    async with async_clients(settings, "dynamodb") as aws:
        store = RunStore(aws["dynamodb"], settings.table)
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task("waiting", total=None)
            while True:
                run = await store.get_run(run_id)
                jobs = await store.list_jobs(run_id) if run else []
                if run is not None:
                    states = Counter(job.status for job in jobs)
                    done = sum(job.processed for job in jobs if job.attempt == 0)
                    description = f"{run.status:<10} jobs: " + (" ".join(f"{n} {s.lower()}" for s, n in sorted(states.items())) or "-")
                    progress.update(task, description=description, total=run.total_rows, completed=done)
                    if run.terminal:
                        progress.update(task, completed=run.total_rows or done)
                        break
                await asyncio.sleep(1)
    console.print(_describe(run, jobs))
