"""The local stack makes what the AWS template declares: names, keys, indexes and routing.

A moto server, `resources.create_all` as `quarry local up` runs it, then every resource read back
through the APIs and compared with the template's own declaration (and with the names the workers'
settings default to, which is how the workers find them).
"""
from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from infra.local_stack import resources
from infra.processes import start_moto
from shared.bootstrap import WORKERS
from shared.settings import Settings

REGION, ACCOUNT = "us-east-1", "123456789012"


@pytest.fixture(scope="module")
def aws(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    server = start_moto(tmp_path_factory.mktemp("moto-logs"))
    try:
        clients = {name: boto3.client(name, endpoint_url=server.url, region_name=REGION, aws_access_key_id="testing",
                                      aws_secret_access_key="testing")
                   for name in ("s3", "sqs", "dynamodb", "sns", "events")}
        clients["outputs"] = resources.create_all(clients, region=REGION, account=ACCOUNT)
        yield clients
    finally:
        server.stop()


@pytest.fixture(scope="module")
def declared() -> resources.Resolver:
    return resources.Resolver(resources.load_template(), region=REGION, account=ACCOUNT)


def test_the_buckets_are_the_templates_and_the_workers(aws, declared):
    names = {p["BucketName"] for _, p in declared.resources("AWS::S3::Bucket")}
    settings = Settings()

    assert {b["Name"] for b in aws["s3"].list_buckets()["Buckets"]} == names
    assert names == {settings.inputs_bucket, settings.work_bucket, settings.results_bucket}


def test_a_file_dropped_under_incoming_reaches_the_preprocess_queue(aws):
    # moto does not report EventBridgeConfiguration back, so the routing is checked by what arrives.
    settings = Settings()
    queue = aws["sqs"].get_queue_url(QueueName=settings.queue_name("preprocess"))["QueueUrl"]

    aws["s3"].put_object(Bucket=settings.inputs_bucket, Key="incoming/summarize/probe.csv", Body=b"prompt\nhi\n")

    messages = aws["sqs"].receive_message(QueueUrl=queue, WaitTimeSeconds=5).get("Messages", [])
    assert [json.loads(m["Body"])["detail"]["object"]["key"] for m in messages] == ["incoming/summarize/probe.csv"]
    aws["sqs"].delete_message(QueueUrl=queue, ReceiptHandle=messages[0]["ReceiptHandle"])


def test_every_queue_has_the_templates_name_redrive_target_and_receive_count(aws, declared):
    declared_queues = {q["QueueName"]: q for _, q in declared.resources("AWS::SQS::Queue")}
    local = {url.rsplit("/", 1)[-1]: url for url in aws["sqs"].list_queues()["QueueUrls"]}

    assert set(local) == set(declared_queues)
    for name, properties in declared_queues.items():
        attributes = aws["sqs"].get_queue_attributes(QueueUrl=local[name], AttributeNames=["All"])["Attributes"]
        assert attributes["VisibilityTimeout"] == str(properties.get("VisibilityTimeout", 30)), name
        if "RedrivePolicy" in properties:
            redrive = json.loads(attributes["RedrivePolicy"])
            dlq_arn = properties["RedrivePolicy"]["deadLetterTargetArn"]
            assert redrive["deadLetterTargetArn"] == dlq_arn, name
            assert int(redrive["maxReceiveCount"]) == properties["RedrivePolicy"]["maxReceiveCount"], name
            dlq_url = local[dlq_arn.rsplit(":", 1)[-1]]
            assert aws["sqs"].get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
                "QueueArn"] == dlq_arn


def test_each_worker_has_the_queue_and_dlq_its_settings_name(aws):
    settings = Settings()
    local = {url.rsplit("/", 1)[-1] for url in aws["sqs"].list_queues()["QueueUrls"]}

    assert local == {settings.queue_name(w) for w in WORKERS} | {settings.queue_name(f"{w}-dlq") for w in WORKERS}


def test_the_table_has_the_templates_keys_indexes_and_ttl(aws, declared):
    [(_, table)] = declared.resources("AWS::DynamoDB::Table")

    described = aws["dynamodb"].describe_table(TableName=Settings().table)["Table"]
    ttl = aws["dynamodb"].describe_time_to_live(TableName=table["TableName"])["TimeToLiveDescription"]

    assert described["TableName"] == table["TableName"]
    assert described["KeySchema"] == table["KeySchema"]
    assert sorted(described["AttributeDefinitions"], key=str) == sorted(table["AttributeDefinitions"], key=str)
    assert [{k: g[k] for k in ("IndexName", "KeySchema", "Projection")} for g in described["GlobalSecondaryIndexes"]] \
        == table["GlobalSecondaryIndexes"]
    assert (ttl["AttributeName"], ttl["TimeToLiveStatus"]) == (table["TimeToLiveSpecification"]["AttributeName"],
                                                               "ENABLED")


def test_the_bus_is_the_templates_and_the_workers(aws, declared):
    [(_, bus)] = declared.resources("AWS::Events::EventBus")

    assert aws["events"].describe_event_bus(Name=bus["Name"])["Name"] == Settings().bus


def test_every_rule_has_the_templates_bus_pattern_and_target(aws, declared):
    queue_arns = {url.rsplit("/", 1)[-1]: aws["sqs"].get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
                  ["Attributes"]["QueueArn"] for url in aws["sqs"].list_queues()["QueueUrls"]}
    rules = declared.resources("AWS::Events::Rule")

    # Requests on Quarry's bus, S3 drops, and Bedrock's batch and customization job events.
    assert sorted(logical for logical, _ in rules) == ["BedrockCustomizationJobsRule", "BedrockJobsRule",
                                                      "InputsCreatedRule", "RunRequestsRule"]
    for logical, rule in rules:
        bus = rule.get("EventBusName", "default")
        described = aws["events"].describe_rule(Name=rule["Name"], EventBusName=bus)
        targets = aws["events"].list_targets_by_rule(Rule=rule["Name"], EventBusName=bus)["Targets"]
        assert json.loads(described["EventPattern"]) == rule["EventPattern"], logical
        assert described["Arn"] == declared.attribute(logical, "Arn")
        assert [(t["Id"], t["Arn"]) for t in targets] == [(t["Id"], t["Arn"]) for t in rule["Targets"]], logical
        assert {t["Arn"] for t in targets} <= set(queue_arns.values()), f"{logical} targets a queue that does not exist"


def test_the_topic_is_the_templates_and_the_workers(aws, declared):
    [(_, topic)] = declared.resources("AWS::SNS::Topic")
    arns = [t["TopicArn"] for t in aws["sns"].list_topics()["Topics"]]

    assert arns == [f"arn:aws:sns:{REGION}:{ACCOUNT}:{topic['TopicName']}"] == [aws["outputs"]["TopicArn"]]
    assert topic["TopicName"] == Settings().topic_name


def test_creating_again_changes_nothing(aws, declared):
    before = sorted(aws["sqs"].list_queues()["QueueUrls"])

    outputs = resources.create_all({k: v for k, v in aws.items() if k != "outputs"}, region=REGION, account=ACCOUNT)

    assert sorted(aws["sqs"].list_queues()["QueueUrls"]) == before
    assert outputs == aws["outputs"]
