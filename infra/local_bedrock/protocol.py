"""The server side of AWS's rest-json protocol, driven by botocore's own service models.

Requests are read and validated from the same shapes the SDKs are generated from, so the local
service accepts exactly what Bedrock accepts and rejects the rest with Bedrock's messages
("1 validation error detected: Value 'x' at 'jobName' failed to satisfy constraint: ...").
botocore checks only types, required members and minimums on the client; maximums, patterns
and enums are the server's job, and this module does them.
"""
from __future__ import annotations

import datetime as dt
import functools
import re
from typing import Any, Mapping

import botocore.session
import orjson
from botocore.model import OperationModel, Shape

from infra.local_bedrock.errors import BedrockError, validation


@functools.cache
def operation(service: str, name: str) -> OperationModel:
    """botocore's model of one operation of `bedrock` or `bedrock-runtime`."""
    return botocore.session.get_session().get_service_model(service).operation_model(name)


def parse_request(
    op: OperationModel,
    *,
    path_params: Mapping[str, str],
    query: Mapping[str, str],
    headers: Mapping[str, str],
    body: bytes,
) -> dict[str, Any]:
    """The operation's input as a dict of members, validated against its shape."""
    shape = op.input_shape
    params: dict[str, Any] = {}
    if shape is None:
        return params
    payload_member = shape.serialization.get("payload")
    json_body: dict[str, Any] = {}
    if payload_member is None and body:
        try:
            json_body = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise validation(f"The request body is not valid JSON: {exc}") from None
        if not isinstance(json_body, dict):
            raise validation("The request body must be a JSON object")
    for name, member in shape.members.items():
        location = member.serialization.get("location")
        wire_name = member.serialization.get("name", name)
        if location == "uri":
            raw = path_params.get(wire_name)
            if raw is not None:
                params[name] = raw
        elif location == "querystring":
            if wire_name in query:
                params[name] = _from_text(member, query[wire_name], name)
        elif location == "header":
            if wire_name in headers:
                params[name] = _from_text(member, headers[wire_name], name)
        elif name == payload_member:
            params[name] = body
        elif wire_name in json_body:
            params[name] = json_body[wire_name]
    errors = list(_violations(shape, params, ""))
    if errors:
        count = len(errors)
        noun = "error" if count == 1 else "errors"
        raise validation(f"{count} validation {noun} detected: " + "; ".join(errors))
    return params


def _from_text(shape: Shape, text: str, where: str) -> Any:
    """A query-string or header value converted to the member's type."""
    if shape.type_name in ("integer", "long"):
        try:
            return int(text)
        except ValueError:
            raise validation(f"Value '{text}' at '{where}' failed to satisfy constraint: Member must be a number") from None
    if shape.type_name == "timestamp":
        try:
            return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise validation(f"Value '{text}' at '{where}' failed to satisfy constraint: Member must be an ISO 8601 timestamp") from None
    if shape.type_name == "boolean":
        return text.lower() == "true"
    return text


def _violations(shape: Shape, value: Any, where: str):
    """Each constraint of `shape` that `value` breaks, in AWS's wording."""
    meta = shape.metadata
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            yield f"Value at '{where}' failed to satisfy constraint: Member must be a structure"
            return
        for required in meta.get("required", []):
            if value.get(required) is None:
                yield f"Value null at '{_join(where, required)}' failed to satisfy constraint: Member must not be null"
        if meta.get("union") and len([k for k in value if k in shape.members]) != 1:
            yield f"Value at '{where}' failed to satisfy constraint: Member must have exactly one member set"
        for name, member in shape.members.items():
            if value.get(name) is not None and not meta.get("document"):
                yield from _violations(member, value[name], _join(where, name))
        return
    if kind == "list":
        if not isinstance(value, list):
            yield f"Value at '{where}' failed to satisfy constraint: Member must be a list"
            return
        yield from _length(meta, len(value), value, where)
        for index, item in enumerate(value):
            yield from _violations(shape.member, item, f"{where}.{index + 1}.member")
        return
    if kind == "string":
        if not isinstance(value, str):
            yield f"Value '{value}' at '{where}' failed to satisfy constraint: Member must be a string"
            return
        yield from _length(meta, len(value), value, where)
        enum = shape.enum
        if enum and value not in enum:
            yield f"Value '{value}' at '{where}' failed to satisfy constraint: Member must satisfy enum value set: [{', '.join(enum)}]"
        pattern = meta.get("pattern")
        if pattern and not _compiled(pattern).fullmatch(value):
            yield f"Value '{value}' at '{where}' failed to satisfy constraint: Member must satisfy regular expression pattern: {pattern}"
        return
    if kind in ("integer", "long", "float", "double"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            yield f"Value '{value}' at '{where}' failed to satisfy constraint: Member must be a number"
            return
        if "min" in meta and value < meta["min"]:
            yield f"Value '{value}' at '{where}' failed to satisfy constraint: Member must have value greater than or equal to {meta['min']}"
        if "max" in meta and value > meta["max"]:
            yield f"Value '{value}' at '{where}' failed to satisfy constraint: Member must have value less than or equal to {meta['max']}"


def _length(meta: Mapping[str, Any], length: int, value: Any, where: str):
    if "min" in meta and length < meta["min"]:
        yield f"Value '{value}' at '{where}' failed to satisfy constraint: Member must have length greater than or equal to {meta['min']}"
    if "max" in meta and length > meta["max"]:
        yield f"Value '{value}' at '{where}' failed to satisfy constraint: Member must have length less than or equal to {meta['max']}"


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def error_body(error: BedrockError) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of an error, as botocore's rest-json parser reads them."""
    headers = {"x-amzn-ErrorType": f"{error.code}:http://internal.amazon.com/coral/com.amazon.bedrock/"}
    return error.status, headers, orjson.dumps({"message": error.message})


def to_json(value: Any) -> bytes:
    """A response body; datetimes become ISO 8601 in UTC, as Bedrock sends them."""
    return orjson.dumps(value, default=_default, option=orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC)


def _default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return value.decode()
    raise TypeError(f"cannot serialise {type(value).__name__}")
