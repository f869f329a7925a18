"""Starting the local stack's servers as processes: moto, the local Bedrock, the mail sink, workers.

Used by `quarry local up`, the demo and the integration tests, so all run exactly the same
processes. A detached process outlives the command that started it (the stack keeps its pid)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen
    log_path: Path

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def spawn(argv: list[str], *, log_path: Path, env: dict[str, str] | None = None, detach: bool = False) -> subprocess.Popen:
    """Start a process with its output in `log_path`; detached, it survives this one."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(argv, stdout=log_path.open("ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env={**os.environ, **(env or {})}, cwd=ROOT, start_new_session=detach)


def wait_until_up(server: Server, probe: str, timeout: float) -> None:
    """Return once `probe` answers; raise with the log's tail if the process dies or never answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            urllib.request.urlopen(server.url + probe, timeout=1).read()
            return
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{server.name} did not answer on {server.url} within {timeout}s:\n{server.log_tail()}")


def start_moto(log_dir: Path, *, port: int | None = None, detach: bool = False) -> Server:
    """A moto server on loopback (a free port unless given)."""
    port = port or free_port()
    log_path = log_dir / f"moto-{port}.log"
    process = spawn([sys.executable, "-m", "infra.local_stack.moto_server", "-H", "127.0.0.1", "-p", str(port)],
                    log_path=log_path, detach=detach)
    server = Server("moto", f"http://127.0.0.1:{port}", process, log_path)
    wait_until_up(server, "/moto-api/", timeout=30)
    return server


def start_local_bedrock(log_dir: Path, *, aws_endpoint: str, env: dict[str, str] | None = None,
                        args: tuple[str, ...] = (), timeout: float = 60, port: int | None = None,
                        detach: bool = False) -> Server:
    """The local Bedrock on loopback, talking to S3 and EventBridge at `aws_endpoint`."""
    port = port or free_port()
    log_path = log_dir / f"local-bedrock-{port}.log"
    process_env = {
        "AWS_ENDPOINT_URL": aws_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        # The service keeps its state under its home and resumes what it finds there: unless told
        # otherwise, each server gets a fresh one beside its log, never one shared with another run.
        "LOCAL_BEDROCK_HOME": str(log_dir / f"local-bedrock-home-{port}"),
        **(env or {}),
    }
    process = spawn([sys.executable, "-m", "infra.local_bedrock", "--port", str(port), *args],
                    log_path=log_path, env=process_env, detach=detach)
    server = Server("local-bedrock", f"http://127.0.0.1:{port}", process, log_path)
    wait_until_up(server, "/local-bedrock-api/health", timeout=timeout)
    return server
