"""The response cache in S3: which pairs a model has answered, their answers, and new answers.

Shared by every run (batch runs that ask for it, and every evaluation): keys come from
shared/domain/response_cache.py. An entry is written once its answer has been joined to a run's
rows, and never changed afterwards (the same key is the same request, so a second write carries
an equal answer). Blocking (boto3), for worker threads; many small objects, so reads and writes go
through a small thread pool.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable

import orjson
from botocore.exceptions import ClientError

from shared.adapters.aws import translate
from shared.domain.response_cache import entry_key, model_prefix

_THREADS = 16
_BATCH = 256


class ResponseCache:
    def __init__(self, s3: Any, bucket: str) -> None:
        self._s3 = s3
        self._bucket = bucket

    def known(self, model_id: str) -> set[str]:
        """Every pair key answered for `model_id` (one paged listing of its prefix)."""
        prefix = model_prefix(model_id)
        keys: set[str] = set()
        try:
            for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=self._bucket, Prefix=prefix):
                keys.update(item["Key"][len(prefix):].removesuffix(".json") for item in page.get("Contents", []))
        except ClientError as exc:
            raise translate(exc, f"listing the response cache of {model_id}") from exc
        return keys

    def get_many(self, model_id: str, keys: list[str]) -> dict[str, dict[str, Any]]:
        """key -> the cached modelOutput, for the keys that are there (a 404 is simply left out)."""
        def one(key: str) -> tuple[str, dict[str, Any] | None]:
            try:
                body = self._s3.get_object(Bucket=self._bucket, Key=entry_key(model_id, key))["Body"].read()
            except ClientError as exc:
                if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
                    return key, None
                raise translate(exc, "reading the response cache") from exc
            return key, orjson.loads(body)["modelOutput"]

        with ThreadPoolExecutor(_THREADS, thread_name_prefix="cache-get") as pool:
            return {key: output for key, output in pool.map(one, keys) if output is not None}

    def put_many(self, model_id: str, entries: Iterable[tuple[str, dict[str, Any]]]) -> int:
        """Store each (key, modelOutput); the number written."""
        def one(entry: tuple[str, dict[str, Any]]) -> None:
            key, output = entry
            try:
                self._s3.put_object(Bucket=self._bucket, Key=entry_key(model_id, key),
                                    Body=orjson.dumps({"model_id": model_id, "modelOutput": output}))
            except ClientError as exc:
                raise translate(exc, "writing the response cache") from exc

        written = 0
        batch: list[tuple[str, dict[str, Any]]] = []
        with ThreadPoolExecutor(_THREADS, thread_name_prefix="cache-put") as pool:
            # A few hundred entries in flight at a time: a run's answers are never held whole.
            for entry in entries:
                batch.append(entry)
                if len(batch) >= _BATCH:
                    written += sum(1 for _ in pool.map(one, batch))
                    batch = []
            written += sum(1 for _ in pool.map(one, batch))
        return written
