"""Bedrock's errors, as the service returns them on the wire (rest-json)."""
from __future__ import annotations

# HTTP status per error code, as botocore's service models declare them.
_STATUS = {
    "ValidationException": 400,
    "ServiceQuotaExceededException": 400,
    "ConflictException": 400,
    "AccessDeniedException": 403,
    "ResourceNotFoundException": 404,
    "ModelNotReadyException": 429,
    "ThrottlingException": 429,
    "InternalServerException": 500,
    "UnknownOperationException": 404,
}


class BedrockError(Exception):
    """An error the service answers with: code, HTTP status and a message that says what and where."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    @property
    def status(self) -> int:
        return _STATUS.get(self.code, 400)


def validation(message: str) -> BedrockError:
    return BedrockError("ValidationException", message)


def not_found(message: str) -> BedrockError:
    return BedrockError("ResourceNotFoundException", message)


def conflict(message: str) -> BedrockError:
    return BedrockError("ConflictException", message)


def quota_exceeded(message: str) -> BedrockError:
    return BedrockError("ServiceQuotaExceededException", message)


def throttled(message: str) -> BedrockError:
    return BedrockError("ThrottlingException", message)
