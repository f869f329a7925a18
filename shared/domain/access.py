"""What a run may read and which models it may name: the deployment decides, never the request.

A request event, a sidecar or the CLI says where its input is and may override the model; these
checks run in preprocess for every run, before anything is read, and the template's IAM grants
the same reads (AllowedInputLocations), so the code and the role agree.
"""
from __future__ import annotations

from fnmatch import fnmatchcase


def input_places(inputs_bucket: str, allowed: list[str]) -> list[str]:
    """The S3 prefixes inputs may be read from: the inputs bucket, then the allow-list."""
    places = [f"s3://{inputs_bucket}/"]
    for place in allowed:
        bucket, _, prefix = place.removeprefix("s3://").partition("/")
        places.append(f"s3://{bucket}/{prefix}")
    return places


def input_refusal(uri: str, *, inputs_bucket: str, allowed: list[str]) -> str | None:
    """Why a run may not read `uri`, or None if it may."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not uri.startswith("s3://") or not bucket or not key:
        return f"{uri!r} is not an s3://bucket/key URI of an object"
    places = input_places(inputs_bucket, allowed)
    if any(uri.startswith(place) for place in places):
        return None
    return (f"{uri} is outside the places this deployment reads inputs from ({', '.join(places)}); put the "
            f"file under s3://{inputs_bucket}/, or ask the operator to add its location to AllowedInputLocations "
            "(QUARRY_ALLOWED_INPUTS)")


def model_refusal(model_id: str, *, allowed: list[str]) -> str | None:
    """Why a run may not use `model_id` under the deployment's allowed-model globs, or None."""
    if any(fnmatchcase(model_id, pattern) for pattern in allowed):
        return None
    return (f"model {model_id!r} is not one this deployment allows ({', '.join(allowed) or 'none'}); ask the "
            "operator to add it to AllowedModels (QUARRY_ALLOWED_MODELS)")
