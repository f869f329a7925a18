"""Job chunks uploaded while the rest of the input is prepared.

prepare hands over each chunk as soon as its records are in the local spool (a byte range of
it); one thread uploads them in order, so the upload of one overlaps the preparation of the
next, and the S3 side (moto here, a network on AWS) and the data plane each keep a core busy.
The queue holds chunk descriptors, never bytes (the bytes are in the spool on disk, written
anyway), so its bound only stops a runaway: when the chunk size is decided, a quarter into the
input, every chunk of that quarter is queued at once and must not make preparation wait. An
upload that fails stops preparation at its next chunk with that error.
"""
from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Callable

from shared.adapters.objects import SyncObjects
from shared.dataplane.splitter import Chunk

_QUEUE_CHUNKS = 64
_DONE = object()


class ChunkUploads:
    """Uploads chunks of `spool` to `uri_of(chunk.index)` in a thread: start(), submit() each,
    wait() for them all, and close() in any case."""

    def __init__(self, objects: SyncObjects, spool: Path, uri_of: Callable[[int], str]) -> None:
        self._objects, self._spool, self._uri_of = objects, spool, uri_of
        self._queue: queue.Queue = queue.Queue(_QUEUE_CHUNKS)
        self._failure: BaseException | None = None
        self.uploaded: dict[int, Chunk] = {}
        self._thread = threading.Thread(target=self._run, name="chunk-uploads", daemon=True)

    def start(self) -> "ChunkUploads":
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop after what is queued (idempotent); errors are left to wait()."""
        self._stop()

    def submit(self, chunk: Chunk) -> None:
        """Queue the chunk (its bytes are in the spool); raises an earlier upload's error."""
        self._put(chunk)

    def submit_file(self, path: str, uri: str) -> None:
        """Queue a whole local file's upload after the chunks (rows.parquet)."""
        self._put((path, uri))

    def _put(self, item: object) -> None:
        self._raise_failure()
        while True:
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                self._raise_failure()  # the uploader stopped: do not wait for it for ever

    def wait(self) -> dict[int, Chunk]:
        """Every queued chunk uploaded: the chunks by index; raises an upload's error."""
        self._stop()
        self._raise_failure()
        return self.uploaded

    def _stop(self) -> None:
        if self._thread.is_alive():
            while self._thread.is_alive():
                try:
                    self._queue.put(_DONE, timeout=0.5)
                    break
                except queue.Full:
                    continue
            self._thread.join()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if self._failure is not None:
                continue  # drain what is queued, upload nothing more
            try:
                if isinstance(item, Chunk):
                    self._objects.upload_range(str(self._spool), item.byte_offset, item.byte_length,
                                               self._uri_of(item.index))
                    self.uploaded[item.index] = item
                else:
                    self._objects.upload_file(*item)
            except BaseException as exc:  # noqa: BLE001 - handed to the preparing thread
                self._failure = exc
