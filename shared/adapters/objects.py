"""S3 objects: streamed reads (one GET each, never ranged), uploads from local files and from a
stream written as it uploads."""
from __future__ import annotations

import contextlib
import io
import os
import queue
import threading
from typing import Any, BinaryIO, Iterator

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from shared.adapters.aws import translate
from shared.errors import PermanentError

_READ_BYTES = 1 << 20
# Sidecar specs are read whole; nothing a spec needs comes near this.
_SMALL_BYTES = 1 << 20


def _transfer_config() -> TransferConfig:
    # boto3's part size and threads (8 MiB, 10). A file-like body (a byte range) is read into
    # memory a part at a time, ~25 MB of RSS per part in flight in the benchmark: boto3's 10 parts
    # in memory added ~150 MB to a worker's peak, 4 add ~90 MB. A path upload streams each part
    # from disk instead, so whole files go that way.
    config = TransferConfig()
    config.max_in_memory_upload_chunks = 4
    return config


def split_uri(uri: str) -> tuple[str, str]:
    """(bucket, key) of an s3://bucket/key URI; PermanentError for anything else."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not uri.startswith("s3://") or not bucket:
        raise PermanentError(f"{uri!r} is not an s3://bucket/key URI")
    return bucket, key


class SyncObjects:
    """boto3-based, for worker threads that stream large objects through the data plane."""

    def __init__(self, s3: Any) -> None:
        self._s3 = s3
        self._transfer = _transfer_config()
        self._stream_transfer = _transfer_config()
        # A stream's parts are read into memory before they are sent (~25 MB of RSS each in the
        # benchmark); two keep the upload going while the next part is written.
        self._stream_transfer.max_in_memory_upload_chunks = 2

    def open(self, uri: str) -> BinaryIO:
        """A file-like over the object, read with a single streaming GET."""
        bucket, key = split_uri(uri)
        try:
            return self._s3.get_object(Bucket=bucket, Key=key)["Body"]
        except ClientError as exc:
            code = exc.response["Error"]["Code"]
            if code in ("NoSuchKey", "404"):
                raise PermanentError(f"{uri} does not exist (was it deleted before the run started?)") from exc
            raise translate(exc, f"reading {uri}") from exc

    def size(self, uri: str) -> int | None:
        """The object's size, or None if it does not exist. Only a 404 means that: a throttled or
        failing HEAD is a RetryableError and a refused one (403) a PermanentError."""
        bucket, key = split_uri(uri)
        try:
            return self._s3.head_object(Bucket=bucket, Key=key)["ContentLength"]
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404 \
                    or exc.response["Error"]["Code"] in ("NoSuchKey", "404", "NotFound"):
                return None
            raise translate(exc, f"reading {uri}") from exc

    def read_small(self, uri: str, limit: int = _SMALL_BYTES) -> bytes | None:
        """A small object's bytes (a sidecar spec), or None if it does not exist; larger than
        `limit` is a PermanentError, so a stray big file is never read into memory."""
        body = self._body_or_none(uri)
        if body is None:
            return None
        with body:
            data = body.read(limit + 1)
        if len(data) > limit:
            raise PermanentError(f"{uri} is over {limit:,} bytes; a spec file must be small JSON")
        return data

    def upload_range(self, path: str, offset: int, length: int, uri: str) -> None:
        """Upload `length` bytes of a local file from `offset` as one object (multipart if large)."""
        if offset == 0 and length == os.path.getsize(path):
            self.upload_file(path, uri)
            return
        bucket, key = split_uri(uri)
        with open(path, "rb") as handle:
            try:
                if length <= _SINGLE_PUT_BYTES:
                    # One PUT streamed from disk: no part is read into memory (s3transfer holds up
                    # to 4 parts of 8 MiB, and copies them), and no thread pool.
                    self._s3.put_object(Bucket=bucket, Key=key, Body=_Window(handle, offset, length),
                                        ContentLength=length)
                else:
                    handle.seek(offset)
                    self._s3.upload_fileobj(_Slice(handle, length), bucket, key, Config=self._transfer)
            except ClientError as exc:
                raise translate(exc, f"writing {uri}") from exc

    def upload_file(self, path: str, uri: str) -> None:
        """Upload a whole local file (multipart if large), each part streamed from disk."""
        bucket, key = split_uri(uri)
        try:
            self._s3.upload_file(path, bucket, key, Config=self._transfer)
        except ClientError as exc:
            raise translate(exc, f"writing {uri}") from exc

    def put(self, uri: str, data: bytes) -> None:
        bucket, key = split_uri(uri)
        try:
            self._s3.put_object(Bucket=bucket, Key=key, Body=data)
        except ClientError as exc:
            raise translate(exc, f"writing {uri}") from exc

    def lines(self, uri: str) -> Iterator[bytes]:
        """The object's lines, streamed; nothing if the object does not exist."""
        body = self._body_or_none(uri)
        if body is not None:
            yield from _split_lines(body.iter_chunks(_READ_BYTES))

    def blocks(self, uri: str, size: int = _READ_BYTES, *, ahead: int = 0) -> Iterator[bytes]:
        """The object's bytes as they arrive, in blocks of up to `size`; nothing if it does not exist.

        `ahead` > 0: a thread reads up to that many blocks ahead of the caller, so the GET goes on
        while the caller works on what it has (a reader that parses what it reads)."""
        body = self._body_or_none(uri)
        if body is None:
            return
        try:
            yield from (_read_ahead(body.iter_chunks(size), ahead) if ahead > 0 else body.iter_chunks(size))
        finally:
            body.close()  # also when the reader stops early: the connection is not reused half-read

    def _body_or_none(self, uri: str) -> Any:
        """The object's streaming body from one GET, or None if it does not exist."""
        bucket, key = split_uri(uri)
        try:
            return self._s3.get_object(Bucket=bucket, Key=key)["Body"]
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
                return None
            raise translate(exc, f"reading {uri}") from exc

    @contextlib.contextmanager
    def writing(self, uri: str) -> Iterator[BinaryIO]:
        """A stream whose bytes are uploaded to `uri` (multipart if large) while they are written.

        The object appears only if the block ends without an error: an error aborts the upload,
        leaving no object, and is raised as it was. A failed upload raises from the block's writes
        or at its end.
        """
        bucket, key = split_uri(uri)
        pipe = _Pipe()
        failure: list[BaseException] = []

        def upload() -> None:
            try:
                self._s3.upload_fileobj(_PipeReader(pipe), bucket, key, Config=self._stream_transfer)
            except BaseException as exc:  # noqa: BLE001 - handed to the writing thread
                failure.append(exc)
            finally:
                pipe.reader_done()

        thread = threading.Thread(target=upload, name=f"upload-{key.rsplit('/', 1)[-1]}", daemon=True)
        thread.start()
        writer = _PipeWriter(pipe)
        try:
            yield writer
            writer.finish()
        except BaseException as exc:
            upload_stopped = pipe.reader_finished()  # on its own, before this abort
            pipe.abort(exc)
            thread.join()
            if upload_stopped and failure:
                raise _upload_error(failure[0], uri) from exc
            raise
        thread.join()
        if failure:
            raise _upload_error(failure[0], uri) from failure[0]

    def keys(self, uri: str) -> list[str]:
        """Keys under a prefix URI."""
        bucket, prefix = split_uri(uri)
        keys: list[str] = []
        for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys += [item["Key"] for item in page.get("Contents", [])]
        return keys


def _split_lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The lines of a stream of chunks, without their endings: what botocore's iter_lines yields,
    with each chunk split in one bytes.splitlines call instead of two calls a line (1.5x faster)."""
    pending = b""
    for chunk in chunks:
        data = pending + chunk
        lines = data.splitlines()
        if data.endswith(b"\n"):
            pending = b""
        elif data.endswith(b"\r"):
            pending = lines.pop() + b"\r"  # maybe the first half of a \r\n split across chunks
        else:
            pending = lines.pop()  # the line goes on in the next chunk
        yield from lines
    if pending:
        yield pending.splitlines()[0]


# A byte range up to this size goes up in one streamed PUT (S3 takes up to 5 GB in one); past it,
# in parts sent in parallel.
_SINGLE_PUT_BYTES = 256 << 20


class _Window(io.RawIOBase):
    """A seekable read-only window of `length` bytes at `offset` of an open file: a request body
    botocore streams from disk and can rewind to retry."""

    def __init__(self, handle: BinaryIO, offset: int, length: int) -> None:
        self._handle, self._start, self._length = handle, offset, length
        self._pos = 0
        handle.seek(offset)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        self._pos = max(0, min(self._length, base + pos))
        self._handle.seek(self._start + self._pos)
        return self._pos

    def read(self, size: int = -1) -> bytes:
        left = self._length - self._pos
        size = left if size is None or size < 0 else min(size, left)
        if size <= 0:
            return b""
        data = self._handle.read(size)
        self._pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _Slice(io.RawIOBase):
    """A read-only window of `length` bytes onto an open file."""

    def __init__(self, handle: BinaryIO, length: int) -> None:
        self._handle = handle
        self._left = length

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        size = self._left if size is None or size < 0 else min(size, self._left)
        data = self._handle.read(size)
        self._left -= len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _UploadFailed(Exception):
    """The upload behind a pipe stopped; the writer learns it on its next write."""


def _upload_error(exc: BaseException, uri: str) -> Exception:
    return translate(exc, f"writing {uri}") if isinstance(exc, Exception) else RuntimeError(str(exc))


class _Aborted(Exception):
    """Raised to the uploader by the pipe when its writer failed, so the upload aborts."""


def _read_ahead(blocks: Iterator[bytes], depth: int) -> Iterator[bytes]:
    """`blocks`, read on a thread of their own up to `depth` ahead of the caller. The thread ends
    when the blocks do, or soon after the caller stops taking them (not waited for: the caller
    closes the body, which ends a read in progress)."""
    pieces: queue.Queue = queue.Queue(depth)
    stopped = threading.Event()

    def offer(item: object) -> bool:
        """Queue `item` unless the caller stopped (checked every 0.1 s while the queue is full)."""
        while not stopped.is_set():
            try:
                pieces.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def pump() -> None:
        try:
            for block in blocks:
                if not offer(block):
                    return
            offer(_EOF)
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread
            offer(exc)

    thread = threading.Thread(target=pump, name="read-ahead", daemon=True)
    thread.start()
    try:
        while (piece := pieces.get()) is not _EOF:
            if isinstance(piece, BaseException):
                raise piece
            yield piece
    finally:
        stopped.set()  # a pump waiting to put sees it within 0.1 s; one reading ends with the body


_EOF = object()
# Bytes move through the pipe in pieces of 256 KiB, at most 16 waiting: the writer runs at most
# 4 MiB ahead of the upload, which is enough to cover the pauses while the next chunk is read.
_PIPE_PIECE = 256 << 10
_PIPE_DEPTH = 16


class _Pipe:
    """A bounded queue of byte pieces from one writing thread to one uploading thread."""

    def __init__(self) -> None:
        self._pieces: queue.Queue = queue.Queue(_PIPE_DEPTH)
        self._aborted: BaseException | None = None
        self._reader_done = threading.Event()

    def put(self, piece: object) -> None:
        while True:
            if self._reader_done.is_set():
                raise _UploadFailed("the upload stopped before the stream ended")
            try:
                self._pieces.put(piece, timeout=0.1)
                return
            except queue.Full:
                continue

    def get(self) -> object:
        while True:
            if self._aborted is not None:
                raise _Aborted("the stream's writer failed; the upload is abandoned") from self._aborted
            try:
                return self._pieces.get(timeout=0.1)
            except queue.Empty:
                continue

    def abort(self, exc: BaseException) -> None:
        self._aborted = exc

    def reader_done(self) -> None:
        self._reader_done.set()

    def reader_finished(self) -> bool:
        return self._reader_done.is_set()


class _PipeWriter(io.RawIOBase):
    """The writing end: a write-only, non-seekable binary stream (tell() counts bytes written)."""

    def __init__(self, pipe: _Pipe) -> None:
        self._pipe = pipe
        self._buffer = bytearray()
        self._written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._buffer += view
        self._written += len(view)
        if len(self._buffer) >= _PIPE_PIECE:
            self._pipe.put(bytes(self._buffer))
            self._buffer.clear()
        return len(view)

    def tell(self) -> int:
        return self._written

    def finish(self) -> None:
        if self._buffer:
            self._pipe.put(bytes(self._buffer))
            self._buffer.clear()
        self._pipe.put(_EOF)


class _PipeReader(io.RawIOBase):
    """The reading end, for upload_fileobj: read(n) blocks until n bytes or the end, like a file
    (s3transfer takes a short read as the end of a part, and parts but the last must be >= 5 MiB)."""

    def __init__(self, pipe: _Pipe) -> None:
        self._pipe = pipe
        self._held = b""
        self._ended = False

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        want = float("inf") if size is None or size < 0 else size
        out: list[bytes] = []
        have = 0
        while have < want:
            if not self._held:
                if self._ended:
                    break
                piece = self._pipe.get()
                if piece is _EOF:
                    self._ended = True
                    break
                self._held = piece  # type: ignore[assignment]
            take = self._held if have + len(self._held) <= want else self._held[: int(want - have)]
            self._held = self._held[len(take):]
            out.append(take)
            have += len(take)
        return b"".join(out)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)
