"""Models that outlive one deploy: what a newer worker added is kept, not lost or refused.

During a rolling deploy an older worker reads messages and items a newer one wrote. Fields it does
not know are kept (pydantic's extra="allow") and written back or re-sent with the rest, so the
newer worker finds them again. Where a person wrote the data (a profile, a sidecar, a request),
validating with `STRICT` refuses unknown fields instead, so a typo is an error, not a silent no-op.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, model_validator

# Validation context for data a person wrote: unknown fields are refused.
STRICT: dict[str, Any] = {"unknown_fields": "refuse"}


class Evolving(BaseModel):
    """Keeps fields it does not know; refuses them only when validated with `STRICT`."""

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="after")
    def _refuse_unknown_fields_when_strict(self, info: ValidationInfo) -> Any:
        if info.context and info.context.get("unknown_fields") == "refuse" and self.model_extra:
            raise ValueError(f"unknown field(s): {', '.join(sorted(self.model_extra))}")
        return self
