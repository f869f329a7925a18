"""The response cache's keys: one per (model, request body), whatever run asked.

A pair already answered is never paid for twice: its answer is stored in S3 under the results
bucket, at `cache/<model digest>/<pair digest>.json`. The body is hashed canonically (keys sorted,
no whitespace), so the same request built twice hashes the same. Answers are grouped by model so
that one listing of the model's prefix says which pairs of a run are answered, instead of one
request per pair.
"""
from __future__ import annotations

import hashlib
from typing import Any

import orjson

CACHE_PREFIX = "cache/"


def canonical_body(body: dict[str, Any]) -> bytes:
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def response_key(model_id: str, body: dict[str, Any]) -> str:
    """sha256 hex of the model id and the canonical request body."""
    return hashlib.sha256(model_id.encode() + b"\n" + canonical_body(body)).hexdigest()


def model_prefix(model_id: str) -> str:
    """The key prefix under which every cached answer of `model_id` lives."""
    return f"{CACHE_PREFIX}{hashlib.sha256(model_id.encode()).hexdigest()[:24]}/"


def entry_key(model_id: str, key: str) -> str:
    return f"{model_prefix(model_id)}{key}.json"
