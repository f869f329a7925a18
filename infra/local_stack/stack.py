"""The local stack: moto, the local Bedrock, the mail sink and the five workers, in the background.

`up` and `down` are idempotent. The stack keeps its pids, logs and mail under one home folder
(.local/stack by default, QUARRY_LOCAL_HOME to move it), and its ports are settings so a test
can run a second stack beside a developer's.

The QUARRY_* and LOCAL_BEDROCK_* settings the stack started its workers and the local Bedrock with
are recorded in its home (settings.json). A worker started again while the stack runs (a later
`quarry local up` from another shell, `restart_worker`) gets those same settings, never the
current shell's, and `up` warns when the shell's differ: a stack never runs with two sets of limits.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import boto3
from botocore.config import Config

from infra.local_stack import resources
from infra.processes import ROOT, Server, spawn, start_local_bedrock, start_moto, wait_until_up

WORKERS = ("preprocess", "submit", "poll", "postprocess", "notify")
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local", "AWS_DEFAULT_REGION": "us-east-1"}
# Where the settings the stack's processes were started with are kept, in its home.
SETTINGS_FILE = "settings.json"


@dataclass
class StackConfig:
    home: Path = field(default_factory=lambda: Path(os.environ.get("QUARRY_LOCAL_HOME", ROOT / ".local" / "stack")))
    moto_port: int = int(os.environ.get("QUARRY_LOCAL_MOTO_PORT", "4566"))
    bedrock_port: int = int(os.environ.get("QUARRY_LOCAL_BEDROCK_PORT", "4599"))
    mail_http_port: int = int(os.environ.get("QUARRY_LOCAL_MAIL_HTTP_PORT", "4580"))
    smtp_port: int = int(os.environ.get("QUARRY_LOCAL_SMTP_PORT", "4525"))
    engine: str = "fast"
    poll_interval_s: int = 2
    # More settings for the workers only (tests: a fast watchdog, short visibility timeouts).
    worker_env: dict[str, str] = field(default_factory=dict)

    @property
    def maildir(self) -> Path:
        return self.home / "maildir"

    def url(self, port: int) -> str:
        return f"http://127.0.0.1:{port}"

    def env(self) -> dict[str, str]:
        """What a client of the stack needs: endpoints, credentials, Quarry's settings."""
        return {
            **CREDENTIALS,
            "AWS_ENDPOINT_URL": self.url(self.moto_port),
            "AWS_ENDPOINT_URL_BEDROCK": self.url(self.bedrock_port),
            "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": self.url(self.bedrock_port),
            "QUARRY_POLL_INTERVAL_S": str(self.poll_interval_s),
            "QUARRY_PROFILES_PATH": str(ROOT / "profiles.yaml"),
            "QUARRY_WORKDIR": str(self.home / "work"),
            "QUARRY_LOCAL_HOME": str(self.home),
            # glibc's per-thread malloc arenas otherwise keep the upload threads' buffers.
            "MALLOC_ARENA_MAX": "2",
        }


class LocalStack:
    def __init__(self, config: StackConfig | None = None) -> None:
        self.config = config or StackConfig()
        self.pids = self.config.home / "pids"
        self.logs = self.config.home / "logs"

    # --- up / down / status ----------------------------------------------------------------------------
    def up(self, say=print) -> None:
        """Start whatever is not running; a running stack is left as it is, and what is started
        into it gets the settings it was started with (recorded in its home)."""
        self.pids.mkdir(parents=True, exist_ok=True)
        with self._started_settings(say):
            self._up(say)

    def _up(self, say: Callable[[str], None]) -> None:
        c = self.config
        if not self._alive("moto"):
            say(f"starting moto server on {c.url(c.moto_port)}")
            self._record("moto", start_moto(self.logs, port=c.moto_port, detach=True))
        say("creating resources from infra/aws/template.yaml")
        outputs = resources.create_all(self._clients())
        if self._alive("bedrock") and self._bedrock_engine() != c.engine:
            say(f"restarting the local Bedrock with the {c.engine} engine")
            _terminate(self._pid("bedrock"))
        if not self._alive("bedrock"):
            say(f"starting the local Bedrock ({c.engine} engine) on {c.url(c.bedrock_port)}")
            self._start_bedrock()
        if not self._alive("mailsink"):
            say(f"starting the mail sink (SNS → HTTP {c.mail_http_port} → SMTP {c.smtp_port})")
            self._record("mailsink", self._start_mailsink())
        self._subscribe_mail(outputs["TopicArn"])
        for worker in WORKERS:
            if not self._alive(worker):
                self._start_worker(worker)
        say(f"workers running: {', '.join(WORKERS)}")
        (c.home / "env").write_text(self.env_lines())

    def down(self, say=print) -> None:
        """Stop every process of the stack; nothing running is fine."""
        for name in (*WORKERS, "mailsink", "bedrock", "moto"):
            pid = self._pid(name)
            if pid is None:
                continue
            if _running(pid):
                say(f"stopping {name} (pid {pid})")
                _terminate(pid)
            (self.pids / f"{name}.pid").unlink(missing_ok=True)

    def status(self) -> dict[str, str]:
        """Each component: running (pid) or stopped."""
        return {name: (f"running (pid {self._pid(name)})" if self._alive(name) else "stopped")
                for name in ("moto", "bedrock", "mailsink", *WORKERS)}

    def env_lines(self) -> str:
        return "".join(f"export {key}={value}\n" for key, value in self.config.env().items())

    def kill_worker(self, worker: str) -> None:
        """kill -9 the worker, as a crash would: nothing of it runs after this."""
        self._kill(worker)

    def kill_bedrock(self) -> None:
        """kill -9 the local Bedrock, as a crash would: its jobs stop where they were, and what it
        saved under its home stays."""
        self._kill("bedrock")

    def start_bedrock(self, *, forget: bool = False) -> None:
        """Start the local Bedrock again (killing it first if it runs) on the same port and home, with
        the settings the stack was started with: it resumes the jobs it had not finished. `forget`
        wipes its home first, as a service that lost its state would: it knows none of its jobs."""
        self._kill("bedrock")
        if forget:
            shutil.rmtree(self.bedrock_home, ignore_errors=True)
        with self._started_settings(lambda line: None):
            self._start_bedrock()

    @property
    def bedrock_home(self) -> Path:
        """Where the local Bedrock keeps its jobs, custom models and weights: a home of its own in the stack's."""
        return self.config.home / "bedrock"

    def _kill(self, name: str) -> None:
        pid = self._pid(name)
        if pid is not None and _running(pid):
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while _running(pid) and time.monotonic() < deadline:
                time.sleep(0.05)

    def restart_worker(self, worker: str, env: dict[str, str] | None = None) -> None:
        """Start the worker again (killing it first if it runs), with the settings the stack was
        started with and `env` on top."""
        self.kill_worker(worker)
        with self._started_settings(lambda line: None):
            self._start_worker(worker, env=env)

    def recorded_settings(self) -> dict[str, str] | None:
        """The QUARRY_*/LOCAL_BEDROCK_* settings the running stack was started with; None if none
        were recorded."""
        try:
            return json.loads((self.config.home / SETTINGS_FILE).read_text())
        except (OSError, ValueError):
            return None

    def shell_settings(self) -> dict[str, str]:
        """The settings this process would give the stack: QUARRY_* and LOCAL_BEDROCK_* from the
        environment and the config's worker_env, less what the stack sets itself (endpoints, home,
        ports, workdir, poll interval)."""
        own = set(self.config.env())
        passed = {key: value for key, value in os.environ.items()
                  if key.startswith(("QUARRY_", "LOCAL_BEDROCK_")) and not key.startswith("QUARRY_LOCAL_")
                  and key not in own}
        return {**passed, **self.config.worker_env}

    @contextlib.contextmanager
    def _started_settings(self, say: Callable[[str], None]) -> Iterator[dict[str, str]]:
        """The settings for whatever starts now, in os.environ for the duration: those recorded if
        any part of the stack still runs (warning if this shell's differ), else this shell's, recorded."""
        shell, recorded = self.shell_settings(), self.recorded_settings()
        running = any(self._alive(name) for name in ("bedrock", *WORKERS))
        if running and recorded is not None:
            use = recorded
            changed = sorted(key for key in set(shell) | set(recorded) if shell.get(key) != recorded.get(key))
            if changed:
                say("WARNING: this shell's settings differ from those the running stack was started with; "
                    "what starts now gets the stack's, not the shell's: "
                    + "; ".join(f"{key}: stack {recorded.get(key, '(unset)')}, shell {shell.get(key, '(unset)')}"
                                for key in changed)
                    + ". To change them, `quarry local down` then `quarry local up`.")
        else:
            use = shell
            self.config.home.mkdir(parents=True, exist_ok=True)
            (self.config.home / SETTINGS_FILE).write_text(json.dumps(shell, indent=2, sort_keys=True))
        saved = dict(os.environ)
        for key in self.shell_settings():
            if key not in self.config.worker_env:
                os.environ.pop(key, None)
        os.environ.update(use)
        try:
            yield use
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def worker_pid(self, worker: str) -> int | None:
        pid = self._pid(worker)
        return pid if pid is not None and _running(pid) else None

    # --- internals ---------------------------------------------------------------------------------------
    def _clients(self) -> dict:
        os.environ.update(self.config.env())
        config = Config(retries={"mode": "standard"})
        return {name: boto3.client(name, config=config) for name in ("s3", "sqs", "dynamodb", "sns", "events")}

    def _bedrock_engine(self) -> str | None:
        try:
            with urllib.request.urlopen(self.config.url(self.config.bedrock_port) + "/local-bedrock-api/health",
                                        timeout=2) as response:
                return json.loads(response.read()).get("engine")
        except OSError:
            return None

    def _start_bedrock(self) -> None:
        c = self.config
        self._record("bedrock", start_local_bedrock(self.logs, aws_endpoint=c.url(c.moto_port),
                                                    args=("--engine", c.engine, "--preload"), port=c.bedrock_port,
                                                    detach=True, timeout=300,
                                                    env={"LOCAL_BEDROCK_HOME": str(self.bedrock_home)}))

    def _start_mailsink(self) -> Server:
        c = self.config
        log_path = self.logs / "mailsink.log"
        process = spawn([sys.executable, "-m", "infra.local_stack.mailsink", "--http-port", str(c.mail_http_port),
                         "--smtp-port", str(c.smtp_port), "--maildir", str(c.maildir)], log_path=log_path, detach=True)
        server = Server("mailsink", c.url(c.mail_http_port), process, log_path)
        wait_until_up(server, "/health", timeout=30)
        return server

    def _subscribe_mail(self, topic_arn: str) -> None:
        resources.subscribe_http(self._clients()["sns"], topic_arn, f"{self.config.url(self.config.mail_http_port)}/sns")

    def _start_worker(self, worker: str, timeout: float = 60, env: dict[str, str] | None = None) -> None:
        """Start a worker and return once it logs that it consumes its queue (or fail with its log)."""
        log_path = self.logs / f"{worker}.log"
        start = log_path.stat().st_size if log_path.exists() else 0  # the log is appended to across runs
        process = spawn([sys.executable, "-m", f"services.{worker}.main"], log_path=log_path,
                        env={**self.config.env(), **(env or {})}, detach=True)
        deadline = time.monotonic() + timeout
        while b'"consumer_started"' not in log_path.read_bytes()[start:]:
            if process.poll() is not None or time.monotonic() > deadline:
                if process.poll() is None:
                    _terminate(process.pid)
                raise RuntimeError(f"{worker} did not start:\n{log_path.read_text(errors='replace')[-2000:]}")
            time.sleep(0.1)
        (self.pids / f"{worker}.pid").write_text(str(process.pid))

    def _record(self, name: str, server: Server) -> None:
        (self.pids / f"{name}.pid").write_text(str(server.process.pid))

    def _pid(self, name: str) -> int | None:
        path = self.pids / f"{name}.pid"
        try:
            return int(path.read_text())
        except (OSError, ValueError):
            return None

    def _alive(self, name: str) -> bool:
        pid = self._pid(name)
        return pid is not None and _running(pid)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    # A zombie (exited, not reaped) is not running.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except OSError:
        return True


def _terminate(pid: int, timeout: float = 10) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _running(pid):
        time.sleep(0.1)
    if _running(pid):
        os.kill(pid, signal.SIGKILL)

