"""Reading batch inputs from S3 and writing outputs back, streaming, never a whole file in memory.

Each input file is read with one plain GET and consumed as a stream: a ranged GET makes the moto
server read the whole object first, so many small ranged reads would be quadratic.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import Any, AsyncIterator

from botocore.exceptions import ClientError

class JobFailure(Exception):
    """The job cannot go on; the message is what GetModelInvocationJob shows the user."""


@dataclass(frozen=True)
class InputFile:
    bucket: str
    key: str
    size: int

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]


def split_uri(uri: str) -> tuple[str, str]:
    """(bucket, key) of an s3:// URI."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


async def input_files(s3: Any, uri: str) -> list[InputFile]:
    """The JSONL files a job's s3Uri names: the object itself, or every .jsonl under the prefix."""
    bucket, key = split_uri(uri)
    try:
        if key and not key.endswith("/"):
            try:
                head = await s3.head_object(Bucket=bucket, Key=key)
                return [InputFile(bucket, key, head["ContentLength"])]
            except ClientError as exc:
                if _code(exc) not in ("404", "NoSuchKey", "NotFound"):
                    raise
        prefix = key.rstrip("/") + "/" if key else ""
        files = []
        paginator = s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                if item["Key"].lower().endswith(".jsonl"):
                    files.append(InputFile(bucket, item["Key"], item["Size"]))
    except ClientError as exc:
        raise JobFailure(_access_message(exc, bucket, "input")) from None
    if not files:
        raise JobFailure(f"No JSONL input files were found at {uri}. Put one or more .jsonl files there, "
                         "or point inputDataConfig.s3InputDataConfig.s3Uri at a file.")
    return sorted(files, key=lambda f: f.key)


async def lines(s3: Any, file: InputFile) -> AsyncIterator[tuple[int, bytes]]:
    """(line number from 1, line) for each non-blank line of a file, streamed with one GET."""
    try:
        response = await s3.get_object(Bucket=file.bucket, Key=file.key)
    except ClientError as exc:
        raise JobFailure(_access_message(exc, file.bucket, "input")) from None
    number = 0
    pending = b""
    async with response["Body"] as body:
        async for chunk in body.iter_chunks(1024 * 1024):
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for line in complete:
                number += 1
                if line.strip():
                    yield number, line
    if pending.strip():
        yield number + 1, pending


class OutputWriter:
    """One output object: spooled to a temporary file as it grows, then sent in one streamed PUT.

    Not a multipart upload: moto stores each part, then copies them all into the object on
    completion (a third of its CPU for a job). One PUT takes up to 5 GB, and an output stays under
    it: an input file is at most 1 GB (Limits.max_file_bytes), its output about twice that."""

    def __init__(self, s3: Any, bucket: str, key: str) -> None:
        self._s3, self._bucket, self._key = s3, bucket, key
        self._spool = tempfile.TemporaryFile()

    async def write(self, data: bytes) -> None:
        self._spool.write(data)

    async def close(self) -> None:
        try:
            size = self._spool.tell()
            self._spool.seek(0)
            await self._s3.put_object(Bucket=self._bucket, Key=self._key, Body=self._spool, ContentLength=size)
        except ClientError as exc:
            raise JobFailure(_access_message(exc, self._bucket, "output")) from None
        finally:
            self._spool.close()


async def put(s3: Any, uri: str, data: bytes) -> None:
    """Write one small object."""
    bucket, key = split_uri(uri)
    try:
        await s3.put_object(Bucket=bucket, Key=key, Body=data)
    except ClientError as exc:
        raise JobFailure(_access_message(exc, bucket, "output")) from None


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _access_message(exc: ClientError, bucket: str, role: str) -> str:
    code = _code(exc)
    if code in ("NoSuchBucket", "404") and role == "input" or code == "NoSuchBucket":
        return f"The {role} S3 bucket {bucket} does not exist. Create it, or fix the {role}DataConfig s3Uri."
    if code in ("AccessDenied", "403"):
        return f"Access denied to the {role} S3 bucket {bucket}: the job's role cannot reach it."
    return f"Could not access the {role} S3 bucket {bucket}: {code} {exc.response.get('Error', {}).get('Message', '')}".strip()
