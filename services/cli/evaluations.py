"""`quarry evaluate` and `quarry registry`: start an evaluation, follow it, read the model registry."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from services.cli.following import follow_run
from shared.adapters.aws import async_clients, sync_client
from shared.adapters.objects import SyncObjects
from shared.adapters.queues import Queues
from shared.adapters.registry import Registry
from shared.adapters.store import RunStore
from shared.dataplane.readers import detect_format
from shared.domain.access import input_refusal
from shared.domain.evaluation import parse_config, quick_config
from shared.domain.runs import Run
from shared.errors import PermanentError
from shared.messages import StartRun, new_id
from shared.settings import Settings

EXIT_STATUS = {"SUCCEEDED": 0, "PARTIAL": 3, "FAILED": 1, "CANCELLED": 1}


async def evaluate(args: argparse.Namespace, *, console: Console, out: Console) -> int:
    settings = Settings()
    run_id = new_id()
    if args.config is not None:
        if args.dataset or args.model or args.metric:
            raise PermanentError("give either CONFIG or --dataset/--model/--metric, not both")
        raw = _read_config(args.config, settings)
    else:
        if not args.dataset or len(args.model or []) < 1:
            raise PermanentError("give CONFIG, or --dataset FILE and at least one --model ID")
        raw = quick_config(dataset=args.dataset, models=args.model, metrics=args.metric, name=args.name,
                           registry=args.registry)
    dataset = (raw.get("dataset") or {}) if isinstance(raw, dict) else {}
    uri = dataset.get("uri") if isinstance(dataset, dict) else None
    if isinstance(uri, str) and not uri.startswith("s3://"):
        dataset["uri"] = _upload(Path(uri), run_id, settings, console)
    config = parse_config(raw, where=f"from {args.config or 'the command line'}")
    refusal = input_refusal(config.dataset.uri, inputs_bucket=settings.inputs_bucket, allowed=settings.allowed_inputs)
    if refusal:
        raise PermanentError(f"dataset.uri: {refusal}")
    async with async_clients(settings, "sqs", "dynamodb") as aws:
        await Queues(aws["sqs"], settings).send("preprocess", StartRun(
            run_id=run_id, kind="evaluate", evaluation=config, input_uri=config.dataset.uri, origin="cli",
            source_key=f"cli:{run_id}"))
    console.print(f"evaluation [bold]{run_id}[/] submitted ({len(config.models)} models on {escape(config.dataset.uri)})")
    out.print(run_id, highlight=False)
    if not args.follow:
        return 0
    run = await follow_evaluation(run_id, settings, console)
    show_outcome(run, console)
    return EXIT_STATUS.get(run.status, 1)


def _read_config(source: str, settings: Settings) -> Any:
    if source.startswith("s3://"):
        data = SyncObjects(sync_client(settings, "s3")).read_small(source)
        if data is None:
            raise PermanentError(f"{source} does not exist")
    else:
        path = Path(source)
        if not path.is_file():
            raise PermanentError(f"{path} is not a file")
        data = path.read_bytes()
    try:
        return yaml.safe_load(data)
    except yaml.YAMLError as exc:
        raise PermanentError(f"{source} is not valid YAML or JSON: {exc}") from None


def _upload(path: Path, run_id: str, settings: Settings, console: Console) -> str:
    if not path.is_file():
        raise PermanentError(f"dataset {path} is not a file (give a local file or an s3:// URI)")
    detect_format(path.name)
    uri = f"s3://{settings.inputs_bucket}/uploads/{run_id}/{path.name}"
    console.print(f"uploading {escape(str(path))} ({path.stat().st_size:,} bytes) to {escape(uri)}", highlight=False)
    SyncObjects(sync_client(settings, "s3")).upload_file(str(path), uri)
    return uri


async def follow_evaluation(run_id: str, settings: Settings, console: Console) -> Run:
    """Until the evaluation ends: its status and each model's run, as they change."""
    return await follow_run(run_id, settings, console, _evaluation_line)


async def _evaluation_line(store: RunStore, run: Run) -> str:
    children = {name: await store.get_run(child) for name, child in run.children.items()}
    return f"{run.status:<10} " + "  ".join(
        f"{name}: {c.status.lower() if c else 'starting'}" for name, c in children.items())


def show_outcome(run: Run, console: Console) -> None:
    s = run.summary or {}
    if run.error:
        console.print(f"[red]evaluation {run.status.lower()}:[/] {escape(run.error)}")
    if not s:
        return
    table = Table(title=f"{s['primary_metric']} (95% CI), {s['records']:,} records, "
                        f"{s['pairs_from_cache']:,} answers from the cache")
    for column in ("model", "mean", "95% CI", "cost", "status"):
        table.add_column(column)
    for name, m in s["models"].items():
        ci = m.get("ci") or [None, None]
        fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
        table.add_row(name, fmt(m["mean"]), f"[{fmt(ci[0])}, {fmt(ci[1])}]",
                      "unknown" if m["cost_usd"] is None else f"${m['cost_usd']:.4f}", escape(m["status"]))
    console.print(table)
    console.print(escape(s["reason"]), highlight=False)
    console.print(f"Report: {escape(s['report_uri'])}", highlight=False)


async def registry(args: argparse.Namespace, *, console: Console, out: Console) -> int:
    settings = Settings()
    async with async_clients(settings, "dynamodb") as aws:
        reg = Registry(aws["dynamodb"], settings.table)
        if args.registry_command == "list":
            table = Table("group", "entries", "champion")
            for group, count in sorted((await reg.groups()).items()):
                champion = await reg.champion(group)
                table.add_row(group, str(count), f"{champion['name']} ({champion['model_id']})" if champion else "-")
            out.print(table)
            return 0
        entries = await reg.entries(args.group)
        if not entries:
            raise PermanentError(f"registry group {args.group!r} has no entries")
        champion = await reg.champion(args.group)
        table = Table("evaluated", "run", "model", "model id", "primary", "mean", "95% CI", "cost", "")
        for e in entries:
            m = e["metrics"].get(e["primary_metric"], {})
            ci = m.get("ci") or [None, None]
            fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
            mark = "winner" if e["winner"] else ("recommended" if e["recommended"] else "")
            table.add_row(e["at"][:19], e["run_id"][:8], e["name"], e["model_id"], e["primary_metric"], fmt(m.get("mean")),
                          f"[{fmt(ci[0])}, {fmt(ci[1])}]", "unknown" if e["cost_usd"] is None else f"${e['cost_usd']:.4f}",
                          mark)
        out.print(table)
        if champion:
            out.print(f"champion@{args.group}: {champion['name']} ({champion['model_id']}), from run {champion['run_id']}")
    return 0
