"""Outputs that must match a JSON Schema: extraction, validation, the follow-up prompt, typed columns.

Bedrock batch has no structured output, so a spec may give `output_schema` (a JSON Schema) and
`extract`: `whole` (the whole text is the JSON value) or `first_object` (the first JSON object in
the text, e.g. after a sentence or inside a ```json fence). Each output is parsed and validated with
the `jsonschema` library; an invalid one is asked again once, with the validation error in a
follow-up turn, and kept with a stated error if the second answer is invalid too. Valid outputs
fill one typed column per top-level property of an object schema (Parquet keeps the types).
"""
from __future__ import annotations

import json
from typing import Any, Literal

import pyarrow as pa
from jsonschema import exceptions as schema_errors
from jsonschema import validators

from shared.domain.bodies import Family

Extract = Literal["whole", "first_object"]
SCHEMA_ERROR = "output does not match the output_schema"

_ARROW_TYPES: dict[str, pa.DataType] = {"string": pa.string(), "integer": pa.int64(), "number": pa.float64(),
                                         "boolean": pa.bool_()}
_decoder = json.JSONDecoder()


def check_schema(schema: dict[str, Any]) -> None:
    """ValueError naming what is wrong when `schema` is not a valid JSON Schema."""
    try:
        validators.validator_for(schema).check_schema(schema)
    except schema_errors.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "(top)"
        raise ValueError(f"output_schema is not a valid JSON Schema at {where}: {exc.message}") from None


class OutputValidator:
    """Extract and validate outputs against one schema (the validator is built once per run)."""

    def __init__(self, schema: dict[str, Any], extract: Extract) -> None:
        self.schema = schema
        self.extract = extract
        self._validator = validators.validator_for(schema)(schema)
        self.fields = typed_fields(schema)

    def check(self, text: str) -> tuple[Any, str | None]:
        """(the JSON value, None) when the text holds a valid value, else (None, why not)."""
        value, problem = extract_json(text, self.extract)
        if problem is not None:
            return None, problem
        error = schema_errors.best_match(self._validator.iter_errors(value))
        if error is None:
            return value, None
        where = "/".join(str(p) for p in error.absolute_path) or "(top)"
        return None, f"{SCHEMA_ERROR} at {where}: {error.message[:300]}"


def extract_json(text: str, mode: Extract) -> tuple[Any, str | None]:
    """The JSON value the text holds, as `mode` says where to find it; else (None, why not)."""
    if mode == "whole":
        try:
            return json.loads(text), None
        except ValueError as exc:
            return None, f"{SCHEMA_ERROR}: the output is not JSON ({exc.msg} at character {exc.pos})"
    start = text.find("{")
    while start != -1:
        try:
            value, _ = _decoder.raw_decode(text, start)
            return value, None
        except ValueError:
            start = text.find("{", start + 1)
    return None, f"{SCHEMA_ERROR}: the output holds no JSON object"


def typed_fields(schema: dict[str, Any]) -> list[pa.Field]:
    """One column per top-level property of an object schema: strings, integers, numbers and booleans
    keep their type; anything else (arrays, objects, unions) is its JSON text."""
    properties = schema.get("properties") if schema.get("type", "object") == "object" else None
    if not isinstance(properties, dict):
        return []
    fields = []
    for name, sub in properties.items():
        kind = sub.get("type") if isinstance(sub, dict) else None
        fields.append(pa.field(name, _ARROW_TYPES.get(kind, pa.string()) if isinstance(kind, str) else pa.string()))
    return fields


def typed_arrays(values: list[Any], fields: list[pa.Field]) -> list[pa.Array]:
    """The typed columns of `values` (one per row: the valid JSON object, or None)."""
    arrays = []
    for f in fields:
        column = []
        for value in values:
            item = value.get(f.name) if isinstance(value, dict) else None
            if item is not None and f.type == pa.string() and not isinstance(item, str):
                item = json.dumps(item, ensure_ascii=False)
            elif f.type == pa.float64() and isinstance(item, (int, float)) and not isinstance(item, bool):
                item = float(item)
            column.append(item)
        arrays.append(pa.array(column, type=f.type))
    return arrays


def follow_up_instruction(problem: str, schema: dict[str, Any]) -> str:
    """What the model is told when its answer did not validate."""
    return ("Your previous answer could not be used: " + problem + ". Answer again with only a JSON value that "
            "matches this JSON Schema, and nothing else:\n" + json.dumps(schema, ensure_ascii=False))


def follow_up_body(family: Family, converse: bool, body: dict[str, Any], previous: str, instruction: str) -> dict[str, Any]:
    """The request body again, with the model's previous answer and the instruction as a follow-up
    turn (a conversation for chat families, appended text for prompt-only ones)."""
    body = json.loads(json.dumps(body))  # a deep copy
    if converse or family == "nova":
        body["messages"] = [*body.get("messages", []), {"role": "assistant", "content": [{"text": previous}]},
                            {"role": "user", "content": [{"text": instruction}]}]
    elif family == "anthropic":
        body["messages"] = [*body.get("messages", []), {"role": "assistant", "content": previous},
                            {"role": "user", "content": instruction}]
    elif family == "titan-text":
        body["inputText"] = f"{body.get('inputText', '')}\n{previous}\n\n{instruction}\n"
    elif family in ("llama", "mistral", "cohere"):
        body["prompt"] = f"{body.get('prompt', '')}{previous}\n\n{instruction}\n"
    else:
        raise ValueError(f"a {family} model gives no text to validate against an output_schema")
    return body
