"""The CLI without a stack: arguments, what it checks before any upload, and how it prints runs."""
from __future__ import annotations

import argparse
import io

import pytest
from rich.console import Console

from services.cli.commands import describe, records_done, runs_table
from services.cli.main import _parser, main
from shared.domain.runs import Run
from shared.domain.spec import RunSpec

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"


def every_action(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action.choices.values():
                yield from every_action(choice)
        elif not isinstance(action, argparse._HelpAction):
            yield parser.prog, action


def test_every_argument_of_every_command_has_help_text():
    missing = [f"{prog} {action.dest}" for prog, action in every_action(_parser()) if not action.help]
    assert missing == []


def error_of(argv: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    return exit_.value.code, capsys.readouterr().err


@pytest.mark.parametrize("uri", ["s3://", "s3:///key.csv"])
def test_a_submit_of_an_s3_uri_without_bucket_or_key_is_a_clear_error_not_a_traceback(uri, capsys, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing is called: nothing needs to answer

    code, err = error_of(["submit", uri + ("" if uri.endswith(".csv") else "in.csv"), "--model", HAIKU,
                          "--template", "{{ q }}"], capsys)

    assert code == 1 and "is not an s3://bucket/key URI" in err and "Traceback" not in err


def test_a_submit_of_s3_with_nothing_after_it_is_a_clear_error(capsys, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")

    code, err = error_of(["submit", "s3://", "--model", HAIKU, "--template", "{{ q }}"], capsys)

    assert code == 1 and err.startswith("error:") and "Traceback" not in err


def test_a_template_syntax_error_is_found_before_anything_is_uploaded(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # an upload would fail to connect
    source = tmp_path / "in.csv"
    source.write_text("q\nwhy?\n")

    code, err = error_of(["submit", str(source), "--model", HAIKU, "--template", "{% for %}"], capsys)

    assert code == 1 and "--template: the prompt template has a syntax error on line 1" in err
    assert "uploading" not in err


def test_a_submit_of_another_bucket_is_refused_before_it_is_read(capsys, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")

    code, err = error_of(["submit", "s3://quarry-results/runs/x/results.csv", "--model", HAIKU,
                          "--template", "{{ q }}"], capsys)

    assert code == 1 and "is outside the places this deployment reads inputs from" in " ".join(err.split())


def a_run(run_id: str, **changes) -> Run:
    return Run(run_id=run_id, input_uri="s3://quarry-inputs/uploads/x/report[red].csv", origin="cli",
               source_key=f"cli:{run_id}", spec=RunSpec(model_id=HAIKU, template="{{ q }}"), **changes)


def test_status_shows_whole_run_ids_and_bracketed_names_in_an_80_column_terminal():
    run_ids = ["0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"]
    console = Console(file=io.StringIO(), width=80, color_system=None)

    console.print(runs_table([a_run(run_id, status="SUCCEEDED", total_rows=1_234_567) for run_id in run_ids]))

    text = console.file.getvalue()
    assert all(run_id in text for run_id in run_ids)
    assert "report[red].csv" in "".join(text.replace("│", "").split())


def test_an_on_demand_run_counts_its_records_as_processed():
    run = a_run("a" * 32, status="SUCCEEDED", on_demand=True, total_rows=20, on_demand_records=20,
                summary={"rows": 20, "succeeded": 20, "failed": 0})

    text = describe(run, [])

    assert records_done(run, []) == 20
    assert "records processed: 20" in text and "succeeded 20" in text and "jobs: none (on demand)" in text
