"""prepare holds pyarrow's CSV reader close to the rows it has taken (_ReadAhead), never stalling it."""
from __future__ import annotations

import io
import sys
import threading
import time

import pytest

from shared.dataplane import prepare as prepare_module
from shared.dataplane.prepare import PrepareLimits, PrepareSpec, prepare

CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
HEADER = b"q\n"


class CountingStream(io.RawIOBase):
    """An input stream that knows how many of its bytes were read."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        chunk = self._data.read(size)
        self.read_bytes += len(chunk)
        return chunk


def fixed_rows(count: int, row_bytes: int) -> bytes:
    """A CSV of `count` rows, each exactly `row_bytes` bytes with its line break."""
    return HEADER + b"".join(b"r%0*d\n" % (row_bytes - 2, i) for i in range(count))


def run_prepare(stream, tmp_path, *, batch_rows: int):
    return prepare(stream, name="in.csv", spec=PrepareSpec(model_id=CLAUDE, template="{{ q }}"),
                   limits=PrepareLimits(batch_rows=batch_rows, max_record_bytes=400_000), workdir=tmp_path)


def test_given_a_slow_encoder_when_a_csv_is_prepared_then_the_reader_stays_within_the_bound(tmp_path, monkeypatch):
    # Given 24 MB of 1,000-byte rows, batches of 1,000 rows, a 2 MiB bound and an encoder that
    # dawdles (pyarrow's reader alone would read up to 32 MiB, all of it, ahead), with the reader's
    # fallback for a hold that stalls prepare made longer than the test may take (on a loaded machine
    # it could otherwise let the reader past the bound)
    monkeypatch.setattr(prepare_module, "_READ_AHEAD_BYTES", 2 << 20)
    monkeypatch.setattr(prepare_module._ReadAhead, "_STALL_S", 60.0)
    row_bytes, rows = 1_000, 24_000
    stream = CountingStream(fixed_rows(rows, row_bytes))
    ahead: list[int] = []
    make_encoder = prepare_module._encoder_for
    readers = []

    class Watched(prepare_module._ReadAhead):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            readers.append(self)

    def slow_encoder(*args, **kwargs):
        encoder = make_encoder(*args, **kwargs)

        class Slow:
            vectorized = encoder.vectorized

            def __call__(self, batch, first_row):
                # Measured from the rows prepare has taken, which the bound is about: encoding runs on
                # a pool, and on a loaded machine the batch encoded here was up to two behind them.
                with readers[0]._changed:
                    taken, read = readers[0]._taken_rows, stream.read_bytes
                ahead.append(read - len(HEADER) - taken * row_bytes)
                time.sleep(0.01)
                return encoder(batch, first_row)

            def close(self):
                encoder.close()
        return Slow()

    monkeypatch.setattr(prepare_module, "_ReadAhead", Watched)
    monkeypatch.setattr(prepare_module, "_encoder_for", slow_encoder)
    # When it is prepared
    prepared = run_prepare(stream, tmp_path, batch_rows=1_000)
    # Then every row is there, and the reader was never more than the bound, a batch and two 1 MiB
    # blocks past the last row taken
    assert prepared.total_rows == rows
    assert len(ahead) >= rows // 2_000
    assert max(ahead) <= (2 << 20) + 1_000 * row_bytes + (2 << 20)


def test_given_batches_larger_than_the_bound_when_prepared_then_the_reader_is_never_stalled(tmp_path, monkeypatch):
    # Given rows of 300 KB, batches of 40 rows (12 MB) and a bound of 64 KiB, with the reader's
    # fallback for a hold that stalls prepare made longer than the test may take
    monkeypatch.setattr(prepare_module, "_READ_AHEAD_BYTES", 64 << 10)
    monkeypatch.setattr(prepare_module._ReadAhead, "_STALL_S", 60.0)
    stream = CountingStream(fixed_rows(200, 300_000))
    result: list = []
    # When it is prepared
    worker = threading.Thread(target=lambda: result.append(run_prepare(stream, tmp_path, batch_rows=40)),
                              daemon=True)
    started = time.perf_counter()
    worker.start()
    worker.join(timeout=30)
    # Then it ends, with every row, without once waiting out the fallback
    assert not worker.is_alive(), "prepare stalled on its own read-ahead bound"
    assert result[0].total_rows == 200
    assert time.perf_counter() - started < 30


def test_given_an_encoder_that_fails_when_prepare_stops_then_the_reader_it_held_is_let_go(tmp_path, monkeypatch):
    # Given a bound of one byte (the reader held whenever prepare is not waiting for a batch) and
    # an encoder that fails on the fifth batch
    monkeypatch.setattr(prepare_module, "_READ_AHEAD_BYTES", 1)
    monkeypatch.setattr(prepare_module._ReadAhead, "_STALL_S", 60.0)
    make_encoder = prepare_module._encoder_for

    def failing_encoder(*args, **kwargs):
        encoder = make_encoder(*args, **kwargs)

        def encode(batch, first_row):
            if first_row >= 4 * 500:
                raise RuntimeError("encoder failed")
            return encoder(batch, first_row)
        encode.close = encoder.close
        return encode

    monkeypatch.setattr(prepare_module, "_encoder_for", failing_encoder)
    # When prepare fails
    with pytest.raises(RuntimeError, match="encoder failed"):
        run_prepare(CountingStream(fixed_rows(20_000, 1_000)), tmp_path, batch_rows=500)
    # Then pyarrow's I/O thread is not left waiting in _ReadAhead.read for a prepare that stopped
    # (its reads go on for a moment after prepare has raised)
    time.sleep(0.5)
    deadline = time.monotonic() + 5
    while _threads_in_read_ahead() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _threads_in_read_ahead()


def _threads_in_read_ahead() -> int:
    count = 0
    for frame in sys._current_frames().values():
        while frame is not None:
            if frame.f_code is prepare_module._ReadAhead.read.__code__:
                count += 1
            frame = frame.f_back
    return count
