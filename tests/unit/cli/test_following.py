"""Following a run from the CLI: its status line is printed once per change, and the run is
returned once it has ended."""
from __future__ import annotations

import io

from rich.console import Console

from services.cli.following import print_changes
from shared.domain.runs import Run

RUN_ID = "0123456789abcdef0123456789abcdef"


def a_run(status: str) -> Run:
    return Run(run_id=RUN_ID, status=status, input_uri="s3://quarry-inputs/incoming/summarize/r.csv", origin="cli",
               source_key=f"cli:{RUN_ID}", spec=None)


class ScriptedStore:
    """Answers each read of the run with the next of `reads`."""

    def __init__(self, *reads: Run | None) -> None:
        self.reads = list(reads)

    async def get_run(self, run_id: str) -> Run | None:
        return self.reads.pop(0)


async def status_of(store, run: Run) -> str:
    return run.status


async def test_given_a_run_read_several_times_when_followed_then_each_change_is_printed_once_and_the_ended_run_returned():
    store = ScriptedStore(None, a_run("PREPARING"), a_run("RUNNING"), a_run("RUNNING"), a_run("SUCCEEDED"))
    console = Console(file=io.StringIO(), width=200)

    run = await print_changes(store, RUN_ID, console, status_of, every_s=0)  # type: ignore[arg-type]

    assert run.status == "SUCCEEDED"
    assert console.file.getvalue().splitlines() == ["PREPARING", "RUNNING", "SUCCEEDED"]
    assert store.reads == []
