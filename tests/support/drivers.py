"""The same contract tests, driven through boto3 and through aiobotocore.

A driver hands out clients with one synchronous face: `driver.client("bedrock").get_model_invocation_job(...)`
returns the parsed response (streaming bodies already read to bytes) or raises botocore's
ClientError, whichever SDK is underneath. Every successful response's raw JSON is checked
against botocore's output shape on the way through, so a contract drift fails any test that
happens to touch it.
"""
from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable

import boto3
import orjson
from aiobotocore.session import get_session
from botocore.config import Config

from tests.support.shapes import shape_mismatches

# Client-side parameter validation is off so the tests reach the service's own validation, which
# must reject on its own what botocore would have caught (other SDKs and raw HTTP skip botocore).
_CONFIG = Config(region_name="us-east-1", retries={"total_max_attempts": 1, "mode": "standard"}, parameter_validation=False)


# The services under test; moto's own responses are not ours to check.
CHECKED_SERVICES = ("bedrock", "bedrock-runtime")


class ShapeViolation(AssertionError):
    """A response that does not match botocore's output shape."""


def _shape_checker(service: str) -> Callable[..., None]:
    def check(operation_model, response_dict, **_: Any) -> None:
        if response_dict["status_code"] >= 300 or operation_model.has_streaming_output:
            return
        raw = response_dict["body"]
        body = orjson.loads(raw) if raw else {}
        problems = shape_mismatches(service, operation_model.name, body)
        if problems:
            raise ShapeViolation(f"{operation_model.name} response breaks botocore's shape: {problems}")

    return check


class Boto3Driver:
    name = "boto3"

    def __init__(self) -> None:
        self._clients: dict[tuple[str, str | None], Any] = {}

    def client(self, service: str, endpoint_url: str | None = None) -> Any:
        key = (service, endpoint_url)
        if key not in self._clients:
            client = boto3.client(service, config=_CONFIG, endpoint_url=endpoint_url)
            if service in CHECKED_SERVICES:
                client.meta.events.register(f"before-parse.{client.meta.service_model.service_id.hyphenize()}.*",
                                            _shape_checker(service))
            self._clients[key] = _SyncClient(client, None)
        return self._clients[key]

    def close(self) -> None:
        self._clients.clear()


class AiobotocoreDriver:
    """aiobotocore clients on an event loop in a background thread."""

    name = "aiobotocore"

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._session = get_session()
        self._clients: dict[tuple[str, str | None], Any] = {}
        self._contexts: list[Any] = []

    def run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=120)

    def client(self, service: str, endpoint_url: str | None = None) -> Any:
        key = (service, endpoint_url)
        if key not in self._clients:
            context = self._session.create_client(service, config=_CONFIG, endpoint_url=endpoint_url)
            client = self.run(context.__aenter__())
            if service in CHECKED_SERVICES:
                client.meta.events.register(f"before-parse.{client.meta.service_model.service_id.hyphenize()}.*",
                                            _async(_shape_checker(service)))
            self._contexts.append(context)
            self._clients[key] = _SyncClient(client, self)
        return self._clients[key]

    def close(self) -> None:
        for context in self._contexts:
            self.run(context.__aexit__(None, None, None))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)


def _async(check: Callable[..., None]) -> Callable[..., Any]:
    async def handler(**kwargs: Any) -> None:
        check(**kwargs)

    return handler


# Streaming members (InvokeModel's body, S3's Body) come back already read, as bytes.
_STREAM_KEYS = ("body", "Body")


class _SyncClient:
    """One synchronous face over a boto3 or an aiobotocore client."""

    def __init__(self, client: Any, driver: AiobotocoreDriver | None) -> None:
        self._client = client
        self._driver = driver

    @property
    def raw(self) -> Any:
        return self._client

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._client, name)
        if self._driver is None:
            def call(**kwargs: Any) -> Any:
                response = method(**kwargs)
                for key in _STREAM_KEYS:
                    if isinstance(response, dict) and hasattr(response.get(key), "read"):
                        response[key] = response[key].read()
                return response
            return call

        async def acall(**kwargs: Any) -> Any:
            response = await method(**kwargs)
            for key in _STREAM_KEYS:
                if isinstance(response, dict) and hasattr(response.get(key), "read"):
                    async with response[key] as body:
                        response[key] = await body.read()
            return response

        return lambda **kwargs: self._driver.run(acall(**kwargs))
