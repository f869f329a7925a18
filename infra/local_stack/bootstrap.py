"""Create the local stack's resources from the template and subscribe the mail sink; for compose.

`python -m infra.local_stack.bootstrap` against AWS_ENDPOINT_URL (a moto server); idempotent.
"""
from __future__ import annotations

import os
import time

import boto3
from botocore.exceptions import EndpointConnectionError

from infra.local_stack import resources


def main() -> None:
    clients = {name: boto3.client(name) for name in ("s3", "sqs", "dynamodb", "sns", "events")}
    for _ in range(60):  # moto may still be starting
        try:
            clients["s3"].list_buckets()
            break
        except EndpointConnectionError:
            time.sleep(1)
    outputs = resources.create_all(clients)
    endpoint = os.environ.get("QUARRY_MAIL_ENDPOINT")
    if endpoint:
        resources.subscribe_http(clients["sns"], outputs["TopicArn"], endpoint)
    print(f"resources ready: {outputs}")


if __name__ == "__main__":
    main()
