"""`quarry local up` keeps the settings it started the stack with: a worker started again later,
from a shell with other QUARRY_* settings, runs with the stack's, and `up` says loudly that the
shell's differ."""
from __future__ import annotations

from pathlib import Path

from infra.local_stack.stack import LocalStack
from tests.e2e.conftest import FAST_BEDROCK


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(entry.decode().split("=", 1) for entry in raw if b"=" in entry)


def test_the_stack_records_the_settings_it_started_with(stack):
    assert stack.recorded_settings() == FAST_BEDROCK


def test_a_worker_started_again_from_another_shell_gets_the_stacks_settings_and_up_warns(stack, monkeypatch):
    stack.kill_worker("notify")
    # Another shell, with a limit of its own and one of the stack's settings changed.
    monkeypatch.setenv("QUARRY_MAX_CRASHES", "9")
    monkeypatch.setenv("LOCAL_BEDROCK_DELAY_SUBMITTED", "5")
    said: list[str] = []

    LocalStack(stack.config).up(say=said.append)

    [warning] = [line for line in said if line.startswith("WARNING")]
    assert "QUARRY_MAX_CRASHES: stack (unset), shell 9" in warning
    assert "LOCAL_BEDROCK_DELAY_SUBMITTED: stack 0.1, shell 5" in warning
    env = environ_of(stack.worker_pid("notify"))
    assert "QUARRY_MAX_CRASHES" not in env and env["LOCAL_BEDROCK_DELAY_SUBMITTED"] == "0.1"
    assert stack.recorded_settings() == FAST_BEDROCK, "the running stack's record is kept"


def test_a_restart_from_the_same_settings_says_nothing(stack):
    said: list[str] = []

    LocalStack(stack.config).up(say=said.append)

    assert not [line for line in said if line.startswith("WARNING")]
