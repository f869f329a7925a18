"""Checks a raw JSON response body against botocore's output shape for the operation.

botocore's parser silently drops members it does not know and never checks types, so a service
that misspells a key or sends a number as a string would pass unnoticed through an SDK call.
This checker reads the body as it came off the wire and reports every mismatch.
"""
from __future__ import annotations

import datetime as dt
import re
from typing import Any

import botocore.session
from botocore.model import Shape


def output_shape(service: str, operation: str) -> Shape | None:
    model = botocore.session.get_session().get_service_model(service)
    return model.operation_model(operation).output_shape


def shape_mismatches(service: str, operation: str, body: Any) -> list[str]:
    """Every way `body` (parsed JSON of the HTTP body) breaks the operation's output shape."""
    shape = output_shape(service, operation)
    if shape is None:
        return [] if body in ({}, None) else [f"{operation} has no output, got {body!r}"]
    payload = shape.serialization.get("payload")
    if payload:  # e.g. InvokeModel: the body is a blob, nothing structural to check
        return []
    body_members = {name: member for name, member in shape.members.items()
                    if member.serialization.get("location") is None}
    return list(_check_structure(shape, body_members, body, "$"))


def _check(shape: Shape, value: Any, path: str):
    kind = shape.type_name
    if shape.metadata.get("document"):
        return
    if kind == "structure":
        yield from _check_structure(shape, shape.members, value, path)
    elif kind == "list":
        if not isinstance(value, list):
            yield f"{path}: expected a list, got {type(value).__name__}"
            return
        for index, item in enumerate(value):
            yield from _check(shape.member, item, f"{path}[{index}]")
    elif kind == "map":
        if not isinstance(value, dict):
            yield f"{path}: expected an object, got {type(value).__name__}"
            return
        for key, item in value.items():
            yield from _check(shape.value, item, f"{path}.{key}")
    elif kind == "string":
        if not isinstance(value, str):
            yield f"{path}: expected a string, got {type(value).__name__}"
        elif shape.enum and value not in shape.enum:
            yield f"{path}: {value!r} is not one of {shape.enum}"
        elif shape.metadata.get("pattern") and not re.fullmatch(shape.metadata["pattern"], value):
            yield f"{path}: {value!r} does not match {shape.metadata['pattern']}"
        elif "max" in shape.metadata and len(value) > shape.metadata["max"]:
            yield f"{path}: longer than {shape.metadata['max']}"
    elif kind in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            yield f"{path}: expected an integer, got {value!r}"
    elif kind in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            yield f"{path}: expected a number, got {value!r}"
    elif kind == "boolean":
        if not isinstance(value, bool):
            yield f"{path}: expected a boolean, got {value!r}"
    elif kind == "timestamp":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return
        try:
            dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            yield f"{path}: {value!r} is not a timestamp"
    elif kind == "blob":
        if not isinstance(value, str):
            yield f"{path}: expected base64 text, got {type(value).__name__}"


def _check_structure(shape: Shape, members: dict[str, Shape], value: Any, path: str):
    if not isinstance(value, dict):
        yield f"{path}: expected an object, got {type(value).__name__}"
        return
    wire = {member.serialization.get("name", name): (name, member) for name, member in members.items()}
    for key in value:
        if key not in wire:
            yield f"{path}.{key}: not a member of {shape.name}"
    for required in shape.required_members:
        if required in members and value.get(required) is None:
            yield f"{path}.{required}: required by {shape.name} but missing"
    if shape.metadata.get("union") and len(value) != 1:
        yield f"{path}: a union must set exactly one member, got {sorted(value)}"
    for key, item in value.items():
        if key in wire and item is not None:
            yield from _check(wire[key][1], item, f"{path}.{key}")
