"""Rendering a user's prompt template row by row, in a separate process with hard limits.

jinja2's sandbox stops a template from reaching Python internals, but not from running for ever
(`{% for i in range(100000) %}{% for j in range(100000) %}…`), from raising errors jinja does not
wrap (`range(10**9)` is an OverflowError) or from building a gigabyte string. So templates that
are more than plain `{{ column }}` substitutions render in a child process (`python -m
shared.dataplane.sandbox`) that:

- stops a row that renders longer than `row_timeout_s` (an interval timer in the child),
- has its address space capped (RLIMIT_AS), so an allocation bomb is a MemoryError there, never
  an out-of-memory kill of the worker,
- refuses `**` and `*` whose result would be huge before computing it (a C-level operation that
  a timer cannot interrupt),
- reports any error with the row it happened on.

The parent also gives every request a hard deadline and kills the child if it is passed, so
nothing a template does can hold a preprocess slot for more than about a minute.

Wire protocol over the child's stdin/stdout: frames of an 8-byte big-endian length and orjson.
"""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Any

import orjson

_HEADER = 8
# Rows go to the child in requests of at most this many rows and input bytes, so neither side
# holds more than a few MB per request and the hard deadline stays proportionate.
REQUEST_ROWS = 512
REQUEST_BYTES = 16 << 20
# A ceiling for `**` and for the length of `str * n` / `list * n` results.
MAX_POWER_BITS = 4096
MAX_REPEAT_ITEMS = 1 << 20


@dataclass(frozen=True)
class RenderLimits:
    """How long one row may take to render, how long its prompt may be, the child's memory."""

    row_timeout_s: float = 2.0
    max_output_bytes: int = 1_000_000
    memory_bytes: int = 2 << 30


class RenderFailed(Exception):
    """A row could not be rendered: `row` is its 0-based index in the request, `kind` one of
    template (the template raised), timeout, memory, size (the prompt is over the limit) or crash."""

    def __init__(self, kind: str, row: int | None, message: str) -> None:
        super().__init__(message)
        self.kind, self.row, self.message = kind, row, message


# --- the parent's side ----------------------------------------------------------------------------

class SandboxProcess:
    """One child process rendering one template; not thread-safe (a pool hands it to one thread)."""

    def __init__(self, source: str, limits: RenderLimits) -> None:
        self._limits = limits
        self._process = subprocess.Popen(
            [sys.executable, "-m", "shared.dataplane.sandbox"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, close_fds=True)
        self._send({"source": source, "row_timeout_s": limits.row_timeout_s,
                    "max_output_bytes": limits.max_output_bytes, "memory_bytes": limits.memory_bytes})

    def render(self, columns: dict[str, list[Any]], rows: int) -> list[str]:
        """One prompt per row; RenderFailed names the row that failed and why."""
        # Per-row timeouts are the child's; this deadline catches what they cannot interrupt.
        deadline = self._limits.row_timeout_s * 2 + 30 + rows * 0.01
        self._send({"columns": columns, "rows": rows})
        reply = self._receive(deadline)
        if "error" in reply:
            raise RenderFailed(reply["kind"], reply.get("row"), reply["error"])
        return reply["ok"]

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        for pipe in (self._process.stdin, self._process.stdout):
            if pipe is not None:
                pipe.close()

    @property
    def alive(self) -> bool:
        return self._process.poll() is None

    def _send(self, payload: dict) -> None:
        data = orjson.dumps(payload)
        try:
            self._process.stdin.write(len(data).to_bytes(_HEADER, "big") + data)
            self._process.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            self.close()
            raise RenderFailed("crash", None, f"the template sandbox stopped ({exc})") from None

    def _receive(self, timeout_s: float) -> dict:
        import time

        end = time.monotonic() + timeout_s
        fd = self._process.stdout.fileno()
        buffer = bytearray()
        need = _HEADER
        length = None
        while len(buffer) < need:
            left = end - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self.close()
                raise RenderFailed("timeout", None, f"rendering took over {timeout_s:.0f} s and was stopped")
            piece = os.read(fd, max(need - len(buffer), 1 << 16))
            if not piece:
                self.close()
                code = self._process.returncode
                raise RenderFailed("crash", None, f"the template sandbox exited (code {code}); the template "
                                                  "probably used more memory than allowed")
            buffer += piece
            if length is None and len(buffer) >= _HEADER:
                length = int.from_bytes(buffer[:_HEADER], "big")
                need = _HEADER + length
        return orjson.loads(bytes(buffer[_HEADER:need]))


class SandboxPool:
    """Up to `size` child processes for one template, each used by one thread at a time."""

    def __init__(self, source: str, limits: RenderLimits, size: int = 2) -> None:
        self._source, self._limits, self._size = source, limits, size
        self._idle: list[SandboxProcess] = []
        self._all: list[SandboxProcess] = []
        self._lock = threading.Condition()
        self._closed = False

    def render(self, columns: dict[str, list[Any]], rows: int) -> list[str]:
        process = self._take()
        try:
            return process.render(columns, rows)
        finally:
            self._give_back(process)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            processes, self._all, self._idle = self._all, [], []
        for process in processes:
            process.close()

    def _take(self) -> SandboxProcess:
        with self._lock:
            while True:
                if self._closed:
                    raise RenderFailed("crash", None, "the template sandbox was closed")
                if self._idle:
                    return self._idle.pop()
                if len(self._all) < self._size:
                    process = SandboxProcess(self._source, self._limits)
                    self._all.append(process)
                    return process
                self._lock.wait()

    def _give_back(self, process: SandboxProcess) -> None:
        with self._lock:
            if process.alive and not self._closed:
                self._idle.append(process)
            else:
                if process in self._all:
                    self._all.remove(process)
                process.close()
            self._lock.notify()


# --- the child's side -----------------------------------------------------------------------------

class _RowTimeout(BaseException):
    """Raised by the interval timer; a BaseException so a template cannot swallow it."""


def environment():
    """The sandboxed environment every template is parsed and rendered in."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

    class LimitedEnvironment(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"*", "**"})

        def call_binop(self, context, operator, left, right):
            if operator == "**" and _number(left) and _number(right):
                if abs(right) > 1 and _bits(left) * abs(right) > MAX_POWER_BITS:
                    raise SecurityError(f"{left!r} ** {right!r} is too large for a prompt template")
            if operator == "*":
                sized, count = (left, right) if isinstance(right, int) else (right, left)
                if isinstance(count, int) and isinstance(sized, (str, list, tuple, bytes)) \
                        and len(sized) * count > MAX_REPEAT_ITEMS:
                    raise SecurityError(f"repeating a value {count:,} times is too large for a prompt template")
            return super().call_binop(context, operator, left, right)

    # No autoescape: prompts are plain text, not HTML. keep_trailing_newline so the prompt is
    # exactly what the user wrote; a null value renders as the empty string.
    return LimitedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True,
                              finalize=lambda value: "" if value is None else value)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _bits(value: int | float) -> int:
    return max(int(abs(value)).bit_length(), 1)


def _read_frame(stream) -> dict | None:
    header = stream.read(_HEADER)
    if len(header) < _HEADER:
        return None
    return orjson.loads(stream.read(int.from_bytes(header, "big")))


def _write_frame(stream, payload: dict) -> None:
    data = orjson.dumps(payload)
    stream.write(len(data).to_bytes(_HEADER, "big") + data)
    stream.flush()


def _limit_memory(limit: int) -> None:
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError):  # not enforceable here (e.g. macOS): the deadline still holds
        pass


def _render_rows(template, request: dict, timeout_s: float, max_bytes: int) -> dict:
    columns: dict[str, list[Any]] = request["columns"]
    out: list[str] = []
    for i in range(request["rows"]):
        signal.setitimer(signal.ITIMER_REAL, timeout_s)
        try:
            text = template.render({name: values[i] for name, values in columns.items()})
        except _RowTimeout:
            return {"error": f"rendering one row took over {timeout_s:g} s and was stopped", "kind": "timeout",
                    "row": i}
        except MemoryError:
            return {"error": "rendering one row needed more memory than allowed", "kind": "memory", "row": i}
        except RecursionError:
            return {"error": "the template recursed too deeply", "kind": "template", "row": i}
        except Exception as exc:  # noqa: BLE001 - any error of the user's template fails its row
            return {"error": f"{type(exc).__name__}: {exc}", "kind": "template", "row": i}
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > max_bytes:
            return {"error": f"the prompt is {size:,} bytes, over the limit of {max_bytes:,} bytes per record",
                    "kind": "size", "row": i}
        out.append(text)
    return {"ok": out}


def main() -> None:
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    config = _read_frame(stdin)
    if config is None:
        return
    _limit_memory(config["memory_bytes"])

    def on_alarm(signum, frame):
        raise _RowTimeout()

    signal.signal(signal.SIGALRM, on_alarm)
    template = environment().from_string(config["source"])
    while (request := _read_frame(stdin)) is not None:
        _write_frame(stdout, _render_rows(template, request, config["row_timeout_s"], config["max_output_bytes"]))


if __name__ == "__main__":
    main()
