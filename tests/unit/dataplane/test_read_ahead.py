"""An object read a few blocks ahead of its reader (SyncObjects.blocks(ahead=...)): the same bytes,
errors in the reader's thread, and no thread left behind when the reader stops early."""
from __future__ import annotations

import os
import threading
import time

import pytest

from shared.adapters.objects import SyncObjects, _read_ahead


@pytest.fixture
def objects(s3_client):
    s3_client.create_bucket(Bucket="work")
    return SyncObjects(s3_client)


def read_ahead_threads() -> int:
    return sum(thread.name == "read-ahead" for thread in threading.enumerate())


def assert_no_thread_left(before: int) -> None:
    """The read-ahead threads are back to `before` within a second (a pump checks every 0.1 s)."""
    deadline = time.monotonic() + 1.0
    while read_ahead_threads() != before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert read_ahead_threads() == before


def test_an_object_read_ahead_gives_the_same_bytes_in_order_and_nothing_when_missing(objects):
    data = os.urandom(5 * 1024 * 1024 + 123)
    objects.put("s3://work/out.jsonl", data)

    blocks = list(objects.blocks("s3://work/out.jsonl", size=64 * 1024, ahead=4))

    assert b"".join(blocks) == data and len(blocks) > 4
    assert list(objects.blocks("s3://work/missing.jsonl", ahead=4)) == []


def test_a_reader_that_stops_early_leaves_no_thread_reading(objects):
    objects.put("s3://work/out.jsonl", os.urandom(4 * 1024 * 1024))
    before = read_ahead_threads()

    blocks = objects.blocks("s3://work/out.jsonl", size=16 * 1024, ahead=2)
    next(blocks)
    blocks.close()  # the pump is reading the body or waiting for a place: either way it ends

    assert_no_thread_left(before)


def test_a_reader_that_stops_while_the_pump_waits_for_a_place_leaves_no_thread_waiting():
    before = read_ahead_threads()
    waiting = threading.Event()

    def source():
        for n in range(1_000):
            if n == 3:
                waiting.set()  # one block taken, two queued: the pump now waits to queue this one
            yield b"block %d" % n

    blocks = _read_ahead(source(), 2)
    assert next(blocks) == b"block 0"
    assert waiting.wait(5)
    blocks.close()

    assert_no_thread_left(before)


def test_an_error_while_reading_ahead_is_raised_to_the_reader_after_the_blocks_before_it():
    def failing():
        yield b"one"
        yield b"two"
        raise ConnectionError("the connection was reset")

    got = []
    with pytest.raises(ConnectionError, match="reset"):
        for block in _read_ahead(failing(), 8):
            got.append(block)
    assert got == [b"one", b"two"]


def test_a_reader_that_stops_with_the_last_block_unread_leaves_no_thread_waiting_to_say_the_end():
    before = read_ahead_threads()
    all_read = threading.Event()

    def source():
        yield b"first"
        yield b"last"
        all_read.set()  # the pump asks past "last" only once "last" is queued: it goes on to the end

    blocks = _read_ahead(source(), 1)
    assert next(blocks) == b"first"
    assert all_read.wait(5)  # "last" fills the one place; the pump now waits to queue the end
    blocks.close()

    assert_no_thread_left(before)
