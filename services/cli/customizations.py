"""`quarry customize` and `quarry hosting`: start a customization (or only its pre-flight), follow it,
and see or delete the hosting Quarry made that is still billing."""
from __future__ import annotations

import argparse
import datetime as dt

from rich.console import Console
from rich.markup import escape

from services.cli.evaluations import _read_config
from services.cli.following import follow_run
from shared.adapters.aws import async_clients
from shared.adapters.customization import Customizations
from shared.adapters.queues import Queues
from shared.adapters.store import RunStore
from shared.domain.customization import PRICES, parse_customization
from shared.domain.runs import Run
from shared.errors import PermanentError
from shared.hosting_sweeper import HOSTING_PREFIX
from shared.messages import StartRun, new_id
from shared.settings import Settings


async def customize(args: argparse.Namespace, *, console: Console, out: Console) -> int:
    settings = Settings()
    run_id = new_id()
    spec = parse_customization(_read_config(args.spec, settings), where=f"from {args.spec}")
    async with async_clients(settings, "sqs") as aws:
        await Queues(aws["sqs"], settings).send("preprocess", StartRun(
            run_id=run_id, kind="customize", customization=spec, validate_only=args.validate_only,
            input_uri=spec.training_data, origin="cli", source_key=f"cli:{run_id}"))
    what = "pre-flight" if args.validate_only else "customization"
    console.print(f"{what} [bold]{run_id}[/] submitted ({escape(spec.base_model)} -> {escape(spec.custom_model_name)})")
    out.print(run_id, highlight=False)
    if not (args.follow or args.validate_only):
        return 0
    run = await follow_customization(run_id, settings, console)
    show_outcome(run, console)
    verdict = (run.summary or {}).get("verdict")
    return 0 if verdict in ("validated", "gate_passed", "hosted", "trained") else 1


async def follow_customization(run_id: str, settings: Settings, console: Console) -> Run:
    """Until the customization ends: its status, its job's and its hosting's, as they change."""
    return await follow_run(run_id, settings, console, _customization_line)


async def _customization_line(store: RunStore, run: Run) -> str:
    jobs = {job.job_key: job for job in await store.list_jobs(run.run_id)}
    gate = await store.get_run(run.children["gate"]) if "gate" in run.children else None
    parts = [f"{run.status:<10}"]
    if "customization" in jobs:
        job = jobs["customization"]
        loss = f", loss {job.training_loss:.3f}" if job.training_loss is not None else ""
        parts.append(f"job {job.status.lower()}{loss}")
    if "hosting" in jobs:
        parts.append(f"hosting {jobs['hosting'].bedrock_status or jobs['hosting'].status.lower()}")
    if gate is not None:
        parts.append(f"gate {gate.status.lower()}")
    return "  ".join(parts)


def show_outcome(run: Run, console: Console) -> None:
    from services.notify.customization_email import customization_email  # noqa: PLC0415 - the same words as the email

    subject, body = customization_email(run, run.status)
    console.print(f"[bold]{escape(subject)}[/]")
    console.print(escape(body), highlight=False)


async def hosting(args: argparse.Namespace, *, console: Console, out: Console) -> int:
    settings = Settings()
    async with async_clients(settings, "bedrock", "dynamodb") as aws:
        customizations = Customizations(aws["bedrock"], role_arn=settings.bedrock_role_arn)
        if args.hosting_command == "delete":
            kind = "deployment" if ":custom-model-deployment/" in args.arn else "provisioned"
            if not await customizations.delete_hosting(kind, args.arn):
                raise PermanentError(f"Bedrock does not know the hosting {args.arn} (already deleted?)")
            console.print(f"deleted {escape(args.arn)}")
            return 0
        store = RunStore(aws["dynamodb"], settings.table)
        # One line a hosting, never wrapped: ARNs are long and scripts read these lines.
        out.print("\t".join(("hosting", "kind", "status", "run", "run status", "kept", "since", "$/hour")),
                  soft_wrap=True, highlight=False)
        total = 0.0
        for h in await customizations.list_hostings(HOSTING_PREFIX):
            run_id = h.name.removeprefix(HOSTING_PREFIX).removesuffix("-hosting")
            run = await store.get_run(run_id)
            job = await store.get_job(run_id, "hosting") if run else None
            spec = run.customization if run else None
            prices = PRICES.get(spec.base_model) if spec else None
            hourly = prices.pt_hour * int(h.extra.get("model_units") or 1) if prices and h.kind == "provisioned" else None
            total += hourly or 0.0
            since = h.created.isoformat()[:19] if isinstance(h.created, dt.datetime) else "?"
            out.print("\t".join((h.arn, h.kind, h.status, run_id, run.status.lower() if run else "(lost)",
                                 "yes" if job is not None and job.status == "COMPLETED" else "no", since,
                                 "per token" if h.kind == "deployment" else f"{hourly:,.2f}" if hourly else "?")),
                      soft_wrap=True, highlight=False)
        out.print(f"about ${total:,.2f} an hour in provisioned throughput (list prices)")
    return 0
