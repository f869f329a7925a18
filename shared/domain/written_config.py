"""What the configs people write have in common (an evaluation config, a customization spec): read
from YAML or JSON text the same way, validated strictly, each bad field named by its path, and
hashed canonically so that equal configs have equal hashes.
"""
from __future__ import annotations

import hashlib
from typing import Any, TypeVar

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from shared.domain.evolving import STRICT, Evolving
from shared.errors import InvalidRunSpec

Config = TypeVar("Config", bound=BaseModel)


class WrittenConfig(Evolving):
    """Refuses unknown fields where a person wrote the config (parse_written validates with STRICT)
    and keeps them where a newer worker wrote the run item."""

    model_config = ConfigDict(frozen=True)


def parse_written(model: type[Config], raw: bytes | str | dict[str, Any], *, where: str, what: str,
                  fields: str) -> Config:
    """A validated `model` from YAML or JSON text (or a parsed mapping); InvalidRunSpec naming `where`
    (and, for a non-mapping, the main `fields`) and each bad field's path otherwise."""
    if not isinstance(raw, dict):
        try:
            data = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise InvalidRunSpec(f"{where} is not valid YAML or JSON: {exc}") from None
    else:
        data = raw
    if not isinstance(data, dict):
        raise InvalidRunSpec(f"{where} must hold a mapping with {fields}; it holds a {type(data).__name__}")
    try:
        return model.model_validate(data, context=STRICT)
    except ValidationError as exc:
        raise InvalidRunSpec(f"invalid {what} {where}: {field_problems(exc)}") from None


def field_problems(exc: ValidationError) -> str:
    """Each bad field as `path: what is wrong`, in the words of the person who wrote the config."""
    out = []
    for e in exc.errors():
        path = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        elif e["type"] == "missing":
            msg = "required"
        elif e["type"] == "literal_error" and "expected" in e.get("ctx", {}):
            msg = f"must be one of {e['ctx']['expected']}"
        out.append(f"{path}: {msg}" if path else msg)
    return "; ".join(out)


def canonical_hash(config: BaseModel) -> str:
    """sha256 of the canonical config (sorted keys, defaults filled): equal configs, equal hashes."""
    return hashlib.sha256(orjson.dumps(config.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)).hexdigest()
