"""The CLI's commands over Quarry's adapters: the same store, queues and objects the workers use."""
from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from shared.adapters.aws import async_clients, sync_client
from shared.adapters.objects import SyncObjects
from shared.adapters.queues import Queues
from shared.adapters.store import RunStore
from shared.dataplane.readers import detect_format
from shared.dataplane.templates import check_template_syntax
from shared.domain.access import input_refusal
from shared.domain.estimate import describe as describe_estimate
from shared.domain.runs import Job, Run
from shared.domain.deadlines import stuck_jobs
from shared.domain.spec import Profiles, SpecOverrides, resolve_spec
from shared.errors import PermanentError
from shared.messages import CancelRun, StartRun, new_id
from shared.settings import Settings

# The exit status of a followed run: anything but success is non-zero, so scripts can rely on it.
EXIT_STATUS = {"SUCCEEDED": 0, "PARTIAL": 3, "FAILED": 1, "CANCELLED": 1}


async def submit(args: argparse.Namespace, *, console: Console, out: Console) -> int:
    settings = Settings()
    params = {k: v for k, v in {"max_tokens": args.max_tokens, "temperature": args.temperature}.items() if v is not None}
    overrides = SpecOverrides(model_id=args.model_id, template=args.template, system=args.system,
                              params=params or None, output_format=args.output_format, name=args.name,
                              invocation="Converse" if args.converse else None,
                              dry_run=True if getattr(args, "dry_run", False) else None,
                              budget_usd=getattr(args, "budget_usd", None), deadline=getattr(args, "deadline", None),
                              cache=getattr(args, "cache", None))
    profile = Profiles.load(settings.profiles_path).get(args.profile) if args.profile else None
    spec = resolve_spec(profile, overrides, where="the command line")
    # Everything that can be known before an upload is checked before it.
    if spec.template is not None:
        check_template_syntax(spec.template, name="--template" if args.template else f"profile {args.profile!r}")
    if args.input.startswith("s3://"):
        refusal = input_refusal(args.input, inputs_bucket=settings.inputs_bucket, allowed=settings.allowed_inputs)
        if refusal:
            raise PermanentError(refusal)
    detect_format(args.input)
    run_id = new_id()
    if args.input.startswith("s3://"):
        input_uri = args.input
        objects = SyncObjects(sync_client(settings, "s3"))
        if objects.size(input_uri) is None:
            raise PermanentError(f"{input_uri} does not exist")
    else:
        path = Path(args.input)
        if not path.is_file():
            raise PermanentError(f"{path} is not a file")
        objects = SyncObjects(sync_client(settings, "s3"))
        input_uri = f"s3://{settings.inputs_bucket}/uploads/{run_id}/{path.name}"
        console.print(f"uploading {escape(str(path))} ({path.stat().st_size:,} bytes) to {escape(input_uri)}",
                      highlight=False)
        await asyncio.to_thread(objects.upload_file, str(path), input_uri)
    async with async_clients(settings, "sqs", "dynamodb") as aws:
        await Queues(aws["sqs"], settings).send("preprocess", StartRun(
            run_id=run_id, input_uri=input_uri, spec=spec, origin="cli", source_key=f"cli:{run_id}"))
    console.print(f"run [bold]{run_id}[/] submitted")
    out.print(run_id, highlight=False)
    if spec.dry_run:
        # The estimate is the dry run's whole answer: wait for it (seconds: no job is created).
        run = await _follow(run_id, settings, console)
        estimate = (run.summary or {}).get("estimate")
        if estimate:
            out.print("\n".join(describe_estimate(estimate)), highlight=False, markup=False)
        return EXIT_STATUS.get(run.status, 1)
    if args.follow:
        run = await _follow(run_id, settings, console)
        return EXIT_STATUS.get(run.status, 1)
    return 0


def runs_table(runs: list[Run]) -> Table:
    """Recent runs; run ids are never cut (they are what every other command takes)."""
    table = Table()
    table.add_column("run", no_wrap=True, min_width=32)
    table.add_column("status", no_wrap=True)
    table.add_column("created", no_wrap=False)
    table.add_column("rows", justify="right")
    table.add_column("input", overflow="fold")
    for run in runs:
        rows = f"{run.total_rows:,}" if run.total_rows is not None else "-"
        table.add_row(run.run_id, run.status, run.created_at.strftime("%Y-%m-%d %H:%M:%S"), rows,
                      escape(run.input_uri))
    return table


async def status(args: argparse.Namespace, *, console: Console, out: Console) -> int:
    settings = Settings()
    if args.run_id is None:
        async with async_clients(settings, "dynamodb", "sqs") as aws:
            unreadable: list = []
            runs = await RunStore(aws["dynamodb"], settings.table).list_runs(limit=20, unreadable=unreadable)
            parked = await _parked_messages(Queues(aws["sqs"], settings))
        out.print(runs_table(runs))
        for run in runs:
            if run.stalled and not run.terminal:
                console.print(f"[yellow]stalled:[/] run {run.run_id}: {escape(run.stalled)} "
                              f"(re-driven {run.redrives} time(s))")
        for bad in unreadable:
            console.print(f"[red]unreadable:[/] run item {bad.run_id}: {escape(bad.error)}")
        for queue, count in parked.items():
            console.print(f"[yellow]warning:[/] {count} message(s) parked in {settings.queue_name(queue)}: "
                          "a worker could not handle them; its log says why")
        return 0
    if args.follow:
        run = await _follow(args.run_id, settings, console)
        return EXIT_STATUS.get(run.status, 1)
    run, jobs = await _load(args.run_id, settings)
    out.print(escape(describe(run, jobs)), highlight=False)
    return 0


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


async def results(args: argparse.Namespace, *, console: Console, out: Console) -> int:
    settings = Settings()
    run, _ = await _load(args.run_id, settings)
    if not run.result_uri:
        if run.terminal:
            raise PermanentError(f"run {run.run_id} {_ENDED[run.status]}, with no result file"
                                 + (f": {run.error}" if run.error else ""))
        raise PermanentError(f"run {run.run_id} is {run.status} and has no results yet; `quarry status "
                             f"{run.run_id} --follow` waits for it")
    if run.status != "SUCCEEDED":
        # The file has every row, but not every row succeeded: say so where a script's log shows it.
        console.print(f"[yellow]warning:[/] run {run.run_id} {_ENDED.get(run.status, run.status)}"
                      + (f": {escape(run.error)}" if run.error else "")
                      + (f" ({run.summary['failed']:,} of {run.summary['rows']:,} rows failed; see their "
                         "error column)" if run.summary else ""), highlight=False)
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
    return 0 if run.status == "SUCCEEDED" else EXIT_STATUS.get(run.status, 1)


_ENDED = {"SUCCEEDED": "succeeded", "PARTIAL": "partially succeeded", "FAILED": "failed", "CANCELLED": "was cancelled"}


async def cancel(args: argparse.Namespace, *, console: Console, out: Console) -> int:
    settings = Settings()
    run, _ = await _load(args.run_id, settings)
    if run.terminal:
        raise PermanentError(f"run {run.run_id} already ended {run.status}")
    async with async_clients(settings, "sqs") as aws:
        await Queues(aws["sqs"], settings).send("submit", CancelRun(run_id=run.run_id))
    console.print(f"cancelling run {run.run_id}: its jobs are being stopped; partial results follow")
    return 0


async def mail(args: argparse.Namespace, *, console: Console, out: Console) -> int:
    from infra.local_stack.mailsink import read_mail
    from infra.local_stack.stack import StackConfig

    messages = read_mail(StackConfig().maildir)
    if not messages:
        console.print("no mail yet")
        return 0
    for message in messages[-args.last:]:
        out.rule(escape(f"{message['subject']}"))
        out.print(f"From: {message['from']}\nTo: {message['to']}\nDate: {message['date']}\n", markup=False,
                  highlight=False)
        out.print(message["body"], markup=False, highlight=False)
    return 0


async def _load(run_id: str, settings: Settings) -> tuple[Run, list[Job]]:
    async with async_clients(settings, "dynamodb") as aws:
        store = RunStore(aws["dynamodb"], settings.table)
        run = await store.get_run(run_id)
        if run is None:
            raise PermanentError(f"no run {run_id}; `quarry status` lists recent runs")
        return run, await store.list_jobs(run_id)


def records_done(run: Run, jobs: list[Job]) -> int:
    """Records processed so far: by the first attempt of each job, or on demand for a small run."""
    if run.on_demand:
        if run.summary:
            return run.summary["rows"]
        return (run.total_rows or 0) if run.status == "FINALIZING" else 0
    return sum(job.processed for job in jobs if job.attempt == 0)


def describe(run: Run, jobs: list[Job]) -> str:
    """One run's state as plain text (the caller escapes it for rich)."""
    states = Counter(job.status for job in jobs)
    processed = records_done(run, jobs)
    lines = [f"run {run.run_id}: {run.status}", f"input: {run.input_uri}",
             f"rows: {run.total_rows if run.total_rows is not None else '?'}",
             "jobs: " + (", ".join(f"{count} {state}" for state, count in sorted(states.items()))
                         or ("none (on demand)" if run.on_demand else "none")),
             f"records processed: {processed:,}"]
    if run.result_uri:
        lines.append(f"results: {run.result_uri}")
    if run.summary and "succeeded" in run.summary:
        lines.append(f"succeeded {run.summary['succeeded']:,}, failed {run.summary['failed']:,}")
    if run.error:
        lines.append(f"error: {run.error}")
    if run.stalled and not run.terminal:
        lines.append(f"stalled: {run.stalled} (the watchdog re-drove it {run.redrives} time(s))")
    lines += [f"stuck: {why}" for why in stuck_jobs(jobs)] if not run.terminal else []
    if run.summary and run.summary.get("estimate") and "succeeded" not in run.summary:
        lines += describe_estimate(run.summary["estimate"])
    return "\n".join(lines)


async def _follow(run_id: str, settings: Settings, console: Console) -> Run:
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
                    done = records_done(run, jobs)
                    description = f"{run.status:<10} jobs: " + (
                        " ".join(f"{n} {s.lower()}" for s, n in sorted(states.items()))
                        or ("on demand" if run.on_demand else "-"))
                    progress.update(task, description=description, total=run.total_rows, completed=done)
                    if run.terminal:
                        progress.update(task, completed=run.total_rows or done)
                        break
                await asyncio.sleep(1)
    console.print(escape(describe(run, jobs)), highlight=False)
    return run
