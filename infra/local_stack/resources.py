"""Creates the local stack's resources on a moto server from the AWS template itself.

moto's CloudFormation does not cover everything the template uses (S3 EventBridge notifications,
rule targets on a custom bus, TTL), so the template is read here and each resource is created
through its API, with the same names, keys, indexes and routing. Creating is idempotent: a
resource that exists is left as it is.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from botocore.exceptions import ClientError

TEMPLATE = Path(__file__).resolve().parents[1] / "aws" / "template.yaml"


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form tags (!Ref, !GetAtt, !Sub) as their long forms."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _tag)


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    return yaml.load(path.read_text(), Loader=_CfnLoader)


class Resolver:
    """Resolves Ref, Fn::Sub and Fn::GetAtt ...Arn for the resources the local stack makes."""

    def __init__(self, template: dict[str, Any], *, region: str, account: str, parameters: dict[str, str] | None = None):
        self.template = template
        self.region = region
        self.account = account
        self.parameters = {name: str(spec.get("Default", "")) for name, spec in template.get("Parameters", {}).items()}
        self.parameters.update(parameters or {})

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        if not isinstance(value, dict):
            return value
        if "Ref" in value:
            return self.ref(value["Ref"])
        if "Fn::Sub" in value:
            text = value["Fn::Sub"]
            for name in self.parameters:
                text = text.replace("${" + name + "}", self.parameters[name])
            return text.replace("${AWS::Region}", self.region).replace("${AWS::AccountId}", self.account)
        if "Fn::GetAtt" in value:
            logical, attribute = value["Fn::GetAtt"]
            return self.attribute(logical, attribute)
        return {key: self.resolve(item) for key, item in value.items()}

    def ref(self, name: str) -> str:
        if name in self.parameters:
            return self.parameters[name]
        return self.physical_name(name)

    def physical_name(self, logical: str) -> str:
        resource = self.template["Resources"][logical]
        properties = resource.get("Properties", {})
        kind = resource["Type"]
        field = {"AWS::S3::Bucket": "BucketName", "AWS::SQS::Queue": "QueueName", "AWS::Events::EventBus": "Name",
                 "AWS::Events::Rule": "Name", "AWS::DynamoDB::Table": "TableName", "AWS::SNS::Topic": "TopicName"}[kind]
        name = self.resolve(properties[field])
        if kind == "AWS::SNS::Topic":
            return f"arn:aws:sns:{self.region}:{self.account}:{name}"
        return name

    def attribute(self, logical: str, attribute: str) -> str:
        kind = self.template["Resources"][logical]["Type"]
        name = self.physical_name(logical)
        if kind == "AWS::SQS::Queue" and attribute == "Arn":
            return f"arn:aws:sqs:{self.region}:{self.account}:{name}"
        if kind == "AWS::SQS::Queue" and attribute == "QueueName":
            return name
        raise ValueError(f"the local stack cannot resolve {logical}.{attribute}")

    def resources(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        return [(logical, self.resolve(resource.get("Properties", {})))
                for logical, resource in self.template["Resources"].items() if resource["Type"] == kind]


def create_all(clients: dict[str, Any], *, region: str = "us-east-1", account: str = "123456789012",
               parameters: dict[str, str] | None = None) -> dict[str, str]:
    """Create every resource of the template on the endpoints the clients point at; the outputs."""
    r = Resolver(load_template(), region=region, account=account, parameters=parameters)
    _buckets(clients["s3"], r)
    _queues(clients["sqs"], r)
    _table(clients["dynamodb"], r)
    for _, properties in r.resources("AWS::SNS::Topic"):
        clients["sns"].create_topic(Name=properties["TopicName"])
    _events(clients["events"], r)
    return {name: r.resolve(output["Value"]) for name, output in r.template.get("Outputs", {}).items()}


def _buckets(s3: Any, r: Resolver) -> None:
    for _, properties in r.resources("AWS::S3::Bucket"):
        name = properties["BucketName"]
        try:
            s3.create_bucket(Bucket=name)
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
        if properties.get("NotificationConfiguration", {}).get("EventBridgeConfiguration", {}).get("EventBridgeEnabled"):
            s3.put_bucket_notification_configuration(
                Bucket=name, NotificationConfiguration={"EventBridgeConfiguration": {}})


def _queues(sqs: Any, r: Resolver) -> None:
    # Dead-letter queues first: a queue's redrive policy names its DLQ's ARN.
    queues = sorted(r.resources("AWS::SQS::Queue"), key=lambda item: "RedrivePolicy" in item[1])
    for _, properties in queues:
        attributes = {}
        for key in ("VisibilityTimeout", "MessageRetentionPeriod"):
            if key in properties:
                attributes[key] = str(properties[key])
        if "RedrivePolicy" in properties:
            attributes["RedrivePolicy"] = json.dumps(properties["RedrivePolicy"])
        url = sqs.create_queue(QueueName=properties["QueueName"])["QueueUrl"]
        if attributes:
            sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)


def _table(dynamodb: Any, r: Resolver) -> None:
    for _, p in r.resources("AWS::DynamoDB::Table"):
        try:
            dynamodb.create_table(
                TableName=p["TableName"], BillingMode=p["BillingMode"], AttributeDefinitions=p["AttributeDefinitions"],
                KeySchema=p["KeySchema"], GlobalSecondaryIndexes=p.get("GlobalSecondaryIndexes", []),
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceInUseException":
                raise
            continue
        ttl = p.get("TimeToLiveSpecification")
        if ttl:
            dynamodb.update_time_to_live(TableName=p["TableName"], TimeToLiveSpecification=ttl)


def _events(events: Any, r: Resolver) -> None:
    for _, properties in r.resources("AWS::Events::EventBus"):
        try:
            events.create_event_bus(Name=properties["Name"])
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceAlreadyExistsException":
                raise
    for _, properties in r.resources("AWS::Events::Rule"):
        bus = properties.get("EventBusName", "default")
        events.put_rule(Name=properties["Name"], EventBusName=bus, EventPattern=json.dumps(properties["EventPattern"]))
        events.put_targets(Rule=properties["Name"], EventBusName=bus,
                           Targets=[{"Id": t["Id"], "Arn": t["Arn"]} for t in properties["Targets"]])


def subscribe_http(sns: Any, topic_arn: str, endpoint: str) -> None:
    """Subscribe an HTTP endpoint to the topic once (moto delivers to HTTP, not to email)."""
    existing = sns.list_subscriptions_by_topic(TopicArn=topic_arn)["Subscriptions"]
    if not any(s["Endpoint"] == endpoint for s in existing):
        sns.subscribe(TopicArn=topic_arn, Protocol="http", Endpoint=endpoint)
