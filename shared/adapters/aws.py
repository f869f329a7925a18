"""One factory for every AWS client, async (aiobotocore) and sync (boto3, for streaming in threads).

Endpoints come from the standard AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_<SERVICE> variables, which
botocore reads itself, so the same code reaches AWS, moto and the local Bedrock. Nothing is built
at import time.
"""
from __future__ import annotations

import contextlib
from typing import Any, AsyncIterator

import boto3
from aiobotocore.session import get_session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from shared.errors import ConflictError, PermanentError, QuarryError, RetryableError
from shared.settings import Settings

_RETRYABLE = {
    "ThrottlingException", "Throttling", "TooManyRequestsException", "ServiceQuotaExceededException",
    "ProvisionedThroughputExceededException", "RequestLimitExceeded", "InternalServerException",
    "ServiceUnavailableException", "SlowDown", "InternalError", "ModelNotReadyException", "ModelTimeoutException",
}
_CONFLICT = {"ConditionalCheckFailedException", "TransactionCanceledException", "ConflictException"}


def client_config(settings: Settings) -> Config:
    # Uploads carry a CRC32 that S3 checks (botocore's default since 1.36) and their bodies are
    # not SHA-256 signed: botocore signs an S3 body whenever no checksum header comes with it, and
    # always over plain HTTP (the local stack), and SHA-256 runs at 1.6 GB/s here against CRC32's
    # 3.9. Signing only with checksums where S3 requires them (this config until 2026-11-30) cost
    # ~0.6 CPU-s more per 2.2M rows in each of preprocess and postprocess against moto. Responses
    # are validated only where S3 requires it: a GET of a whole output file is not checksummed.
    return Config(region_name=settings.region, retries={"mode": "standard", "max_attempts": 5},
                  max_pool_connections=50, request_checksum_calculation="when_supported",
                  response_checksum_validation="when_required", s3={"payload_signing_enabled": False})


@contextlib.asynccontextmanager
async def async_clients(settings: Settings, *services: str) -> AsyncIterator[dict[str, Any]]:
    """aiobotocore clients by service name, closed on exit."""
    session = get_session()
    config = client_config(settings)
    async with contextlib.AsyncExitStack() as stack:
        yield {name: await stack.enter_async_context(session.create_client(name, config=config)) for name in services}


def sync_client(settings: Settings, service: str) -> Any:
    """A boto3 client, for streaming large objects from a worker thread."""
    return boto3.client(service, config=client_config(settings))


def translate(exc: Exception, doing: str) -> QuarryError:
    """A botocore error as the domain error a handler decides on."""
    if isinstance(exc, QuarryError):
        return exc
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        message = f"{doing}: {code}: {exc.response.get('Error', {}).get('Message', '')}"
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in _CONFLICT:
            return ConflictError(message)
        if code in _RETRYABLE or status >= 500 or status == 429:
            return RetryableError(message)
        return PermanentError(message)
    if isinstance(exc, (BotoCoreError, OSError)):
        return RetryableError(f"{doing}: {exc}")
    return PermanentError(f"{doing}: {type(exc).__name__}: {exc}")
