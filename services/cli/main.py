"""`quarry`: submit runs, follow them, fetch results, cancel, read the local mail, run the local stack.

Every command talks to the same AWS APIs the workers use, at the endpoints of the standard
AWS_ENDPOINT_URL* variables (or the local stack's, when it is up and nothing else is set).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from shared.errors import QuarryError

console = Console(stderr=True)
out = Console()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quarry", description="Bedrock batch inference at scale.",
        epilog="Exit status: 0 success; 1 an error, or a followed run that failed or was cancelled; 3 a followed "
               "run that partially succeeded.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    submit = commands.add_parser("submit", help="start a run over a local file or an s3:// object")
    submit.add_argument("input", help="CSV, TSV, JSONL or Parquet (optionally .gz): a local path, or s3://bucket/key "
                                      "in a place the deployment reads inputs from")
    submit.add_argument("--profile", help="a profile from profiles.yaml to start from (QUARRY_PROFILES_PATH)")
    submit.add_argument("--model", dest="model_id", help="Bedrock model id, e.g. anthropic.claude-3-haiku-20240307-v1:0")
    submit.add_argument("--template", help='prompt template over the columns, e.g. "Summarise: {{ text }}"; its '
                                           "syntax is checked before anything is uploaded")
    submit.add_argument("--system", help="system prompt")
    submit.add_argument("--max-tokens", type=int, help="most tokens the model may generate per row")
    submit.add_argument("--temperature", type=float, help="sampling temperature, e.g. 0.2")
    submit.add_argument("--format", dest="output_format", choices=["csv", "jsonl", "parquet"],
                        help="format of the result file (default: the profile's, else jsonl)")
    submit.add_argument("--converse", action="store_true", help="send Converse bodies instead of native ones")
    submit.add_argument("--name", help="a name for the run, shown in the email")
    submit.add_argument("--follow", action="store_true",
                        help="follow progress until the run ends; the exit status then says how it ended")
    submit.add_argument("--dry-run", action="store_true",
                        help="read and render the input, count rows, jobs, on-demand records and tokens, and print "
                             "the cost at batch and on-demand prices; no job is created")
    submit.add_argument("--budget-usd", type=float,
                        help="fail the run before any job if its estimated cost is over this many USD")
    submit.add_argument("--deadline", help="finish by then: an ISO time with its zone (2025-07-01T17:00:00Z) or a "
                                           "duration from now (90m, 2h, 1h30m); what batch has not answered by the "
                                           "cutoff goes on demand")
    submit.add_argument("--cache", choices=["reuse", "refresh", "off"],
                        help="the response cache (default: reuse at temperature 0, else off)")

    status = commands.add_parser("status", help="recent runs, or one run's progress")
    status.add_argument("run_id", nargs="?", help="a run id (as `quarry status` lists them); none: recent runs")
    status.add_argument("--follow", action="store_true",
                        help="follow the run until it ends; the exit status then says how it ended")

    results = commands.add_parser("results", help="download a run's result file")
    results.add_argument("run_id", help="the run whose result file to fetch")
    results.add_argument("--out", type=Path, help="where to write it (default: print it)")

    cancel = commands.add_parser("cancel", help="stop a run's jobs and finish it as cancelled")
    cancel.add_argument("run_id", help="the run to cancel")

    evaluate = commands.add_parser(
        "evaluate", help="compare models on a dataset: from a config file, or --dataset with --model IDs",
        description="Start an evaluation run. CONFIG is a YAML or JSON evaluation config (a local file or s3://); "
                    "or give the quick form --dataset FILE --model ID --model ID [--metric M ...].")
    evaluate.add_argument("config", nargs="?", help="the evaluation config (YAML or JSON), a local path or s3://bucket/key")
    evaluate.add_argument("--dataset", help="quick form: the dataset, a local CSV/JSONL/Parquet file or s3:// URI")
    evaluate.add_argument("--model", action="append", help="quick form: a model id to evaluate (repeat for each model)")
    evaluate.add_argument("--metric", action="append", help="quick form: a metric (repeat; default: the qa preset)")
    evaluate.add_argument("--name", help="quick form: a name for the evaluation, shown in the email")
    evaluate.add_argument("--registry", help="quick form: the registry group to record the result in")
    evaluate.add_argument("--follow", action="store_true",
                          help="follow the evaluation until it ends and print the outcome; the exit status says how it ended")

    registry = commands.add_parser("registry", help="the model registry: evaluated models by group")
    registry_commands = registry.add_subparsers(dest="registry_command", required=True, metavar="COMMAND")
    registry_commands.add_parser("list", help="every group, its number of entries and its champion")
    show = registry_commands.add_parser("show", help="a group's evaluated models with their scores")
    show.add_argument("group", help="the registry group")

    customize = commands.add_parser(
        "customize", help="fine-tune a model from a spec: pre-flight, job, hosting, and a gate against the base",
        description="Start a customization run. SPEC is a YAML or JSON customization spec (a local file or s3://).")
    customize.add_argument("spec", help="the customization spec (YAML or JSON), a local path or s3://bucket/key")
    customize.add_argument("--validate-only", action="store_true",
                           help="run only the pre-flight (every record checked, cost against budget): no job")
    customize.add_argument("--follow", action="store_true",
                           help="follow it until it ends and print the verdict; exit 0 only if the model was kept")

    hosting = commands.add_parser("hosting", help="the provisioned throughput and deployments Quarry made")
    hosting_commands = hosting.add_subparsers(dest="hosting_command", required=True, metavar="COMMAND")
    hosting_commands.add_parser("list", help="every Quarry hosting Bedrock has, its run, whether kept, its cost")
    delete = hosting_commands.add_parser("delete", help="delete a hosting (stops its billing)")
    delete.add_argument("arn", help="the provisioned throughput or deployment ARN")

    mail = commands.add_parser("mail", help="the emails the local stack's SMTP sink received")
    mail.add_argument("--last", type=int, default=5, help="how many of the latest emails to show (default 5)")

    local = commands.add_parser("local", help="the local stack: moto, local Bedrock, mail sink, workers")
    local_commands = local.add_subparsers(dest="local_command", required=True, metavar="COMMAND")
    up = local_commands.add_parser("up", help="start the stack in the background (idempotent)")
    up.add_argument("--engine", choices=["fast", "real"], default="fast",
                    help="the local Bedrock's engine: fast (deterministic text, no ML) or real (small local models)")
    local_commands.add_parser("down", help="stop the stack (idempotent)")
    local_commands.add_parser("status", help="which parts are running")
    local_commands.add_parser("env", help="print the export lines that point a shell at the stack")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        if args.command == "local":
            _local(args)
            return
        _use_local_stack_if_unset()
        from services.cli import commands

        from services.cli import customizations, evaluations

        handler = {"submit": commands.submit, "status": commands.status, "results": commands.results,
                   "cancel": commands.cancel, "mail": commands.mail, "evaluate": evaluations.evaluate,
                   "registry": evaluations.registry, "customize": customizations.customize,
                   "hosting": customizations.hosting}[args.command]
        code = asyncio.run(handler(args, console=console, out=out))
    except QuarryError as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}")
        sys.exit(1)
    except (BotoCoreError, ClientError) as exc:  # no credentials, no endpoint, a refused call: said, not traced
        console.print(f"[red]error:[/] {escape(str(exc))}")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    if code:
        sys.exit(code)


def _local(args: argparse.Namespace) -> None:
    from infra.local_stack.stack import LocalStack, StackConfig

    stack = LocalStack(StackConfig(engine=getattr(args, "engine", "fast")))
    if args.local_command == "up":
        try:
            stack.up(say=_say)
        except RuntimeError as exc:  # a part that would not start: its log tail says why
            console.print(f"[red]error:[/] {escape(str(exc))}\nLogs are in {escape(str(stack.logs))}; "
                          "`quarry local down` stops what did start.")
            sys.exit(1)
        console.print("[green]local stack up[/]. Point a shell at it with: eval \"$(quarry local env)\"")
    elif args.local_command == "down":
        stack.down(say=lambda line: console.print(f"[dim]·[/] {escape(line)}"))
        console.print("local stack down")
    elif args.local_command == "status":
        table = Table("component", "state")
        for name, state in stack.status().items():
            table.add_row(name, state)
        out.print(table)
    else:
        out.print(stack.env_lines(), end="")


def _say(line: str) -> None:
    """A step of `quarry local up`; a warning (settings that differ from the stack's) stands out."""
    if line.startswith("WARNING"):
        console.print(f"[bold yellow]{escape(line)}[/]")
    else:
        console.print(f"[dim]·[/] {escape(line)}")


def _use_local_stack_if_unset() -> None:
    """With no endpoint set and a local stack up, talk to the local stack."""
    if os.environ.get("AWS_ENDPOINT_URL"):
        return
    from infra.local_stack.stack import LocalStack

    stack = LocalStack()
    if stack.status()["moto"].startswith("running"):
        os.environ.update(stack.config.env())


if __name__ == "__main__":
    main()
