"""Creates the local stack's resources on a moto server from the AWS template itself.

moto's CloudFormation does not cover everything the template uses (S3 EventBridge notifications,
rule targets on a custom bus, TTL), so the template is read here and each resource is created
through its API, with the same names, keys, indexes and routing. Creating is idempotent: a
resource that exists is left as it is.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from botocore.exceptions import ClientError

TEMPLATE = Path(__file__).resolve().parents[1] / "aws" / "template.yaml"


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form tags (!Ref, !GetAtt, !Sub) as their long forms."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = suffix if suffix in ("Ref", "Condition") else f"Fn::{suffix}"
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


class Unresolvable(ValueError):
    """A value only AWS can give: a resource the local stack does not create, or a queue's URL."""


# A property or list item set to Ref AWS::NoValue is left out, as CloudFormation leaves it out.
_NO_VALUE = object()
_SUB_VARIABLE = re.compile(r"\$\{(!?)([A-Za-z0-9_:.]+)\}")
_PHYSICAL_NAME = {"AWS::S3::Bucket": "BucketName", "AWS::SQS::Queue": "QueueName", "AWS::Events::EventBus": "Name",
                  "AWS::Events::Rule": "Name", "AWS::DynamoDB::Table": "TableName", "AWS::SNS::Topic": "TopicName"}


class Resolver:
    """Resolves the intrinsics in the properties of the resources the local stack makes.

    Ref, Fn::Sub, Fn::GetAtt (Arn and name attributes), Fn::If over the template's Conditions,
    Fn::Join, Fn::Select and the pseudo parameters, AWS::NoValue included. Anything that names a
    resource only AWS creates (the ECS cluster, IAM roles) raises Unresolvable.
    """

    def __init__(self, template: dict[str, Any], *, region: str, account: str, parameters: dict[str, str] | None = None):
        self.template = template
        self.region = region
        self.account = account
        self.parameters = {name: str(spec.get("Default", "")) for name, spec in template.get("Parameters", {}).items()}
        self.parameters.update(parameters or {})
        self.pseudo = {"AWS::Region": region, "AWS::AccountId": account, "AWS::Partition": "aws",
                       "AWS::URLSuffix": "amazonaws.com", "AWS::StackName": "quarry-local"}

    def resolve(self, value: Any) -> Any:
        resolved = self._resolve(value)
        return None if resolved is _NO_VALUE else resolved

    def _resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [item for item in (self._resolve(v) for v in value) if item is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (key, argument), = value.items()
            if key == "Ref":
                return _NO_VALUE if argument == "AWS::NoValue" else self.ref(argument)
            if key == "Fn::Sub":
                return self.sub(argument)
            if key == "Fn::GetAtt":
                logical, attribute = argument.split(".", 1) if isinstance(argument, str) else argument
                return self.attribute(logical, attribute)
            if key == "Fn::If":
                name, when_true, when_false = argument
                return self._resolve(when_true if self.condition(name) else when_false)
            if key == "Fn::Join":
                separator, items = argument
                return separator.join(str(item) for item in self._resolve(items))
            if key == "Fn::Select":
                index, items = argument
                return self._resolve(items)[int(self._resolve(index))]
        resolved = {key: self._resolve(item) for key, item in value.items()}
        return {key: item for key, item in resolved.items() if item is not _NO_VALUE}

    def sub(self, argument: str | list) -> str:
        text, variables = (argument, {}) if isinstance(argument, str) else argument

        def replace(match: re.Match) -> str:
            literal, name = match.groups()
            if literal:
                return "${" + name + "}"
            if name in variables:
                return str(self._resolve(variables[name]))
            if "." in name:
                return self.attribute(*name.split(".", 1))
            return self.ref(name)

        return _SUB_VARIABLE.sub(replace, text)

    def condition(self, name: str) -> bool:
        return bool(self._truth(self.template.get("Conditions", {})[name]))

    def _truth(self, value: Any) -> Any:
        if isinstance(value, dict) and len(value) == 1:
            (key, argument), = value.items()
            if key == "Fn::Equals":
                left, right = (self._truth(item) for item in argument)
                return str(left) == str(right)
            if key == "Fn::Not":
                return not self._truth(argument[0])
            if key == "Fn::And":
                return all(self._truth(item) for item in argument)
            if key == "Fn::Or":
                return any(self._truth(item) for item in argument)
            if key == "Condition":
                return self.condition(argument)
        return self._resolve(value)

    def included(self, resource: dict[str, Any]) -> bool:
        """Whether the resource exists with these parameters (its Condition, if any, holds)."""
        return "Condition" not in resource or self.condition(resource["Condition"])

    def ref(self, name: str) -> Any:
        if name in self.parameters:
            return self.parameters[name]
        if name in self.pseudo:
            return self.pseudo[name]
        if self._kind(name) == "AWS::SQS::Queue":
            raise Unresolvable(f"Ref {name} is a queue URL, which only the endpoint knows (use GetQueueUrl)")
        return self.physical_name(name)

    def physical_name(self, logical: str) -> str:
        kind = self._kind(logical)
        if kind not in _PHYSICAL_NAME:
            raise Unresolvable(f"the local stack does not create {logical} ({kind})")
        name = self.resolve(self.template["Resources"][logical].get("Properties", {})[_PHYSICAL_NAME[kind]])
        if kind == "AWS::SNS::Topic":
            return f"arn:aws:sns:{self.region}:{self.account}:{name}"
        return name

    def attribute(self, logical: str, attribute: str) -> str:
        kind = self._kind(logical)
        name = self.physical_name(logical)
        where = f"{self.region}:{self.account}"
        if attribute == "Arn":
            if kind == "AWS::SQS::Queue":
                return f"arn:aws:sqs:{where}:{name}"
            if kind == "AWS::S3::Bucket":
                return f"arn:aws:s3:::{name}"
            if kind == "AWS::DynamoDB::Table":
                return f"arn:aws:dynamodb:{where}:table/{name}"
            if kind == "AWS::Events::EventBus":
                return f"arn:aws:events:{where}:event-bus/{name}"
            if kind == "AWS::Events::Rule":
                bus = self.resolve(self.template["Resources"][logical]["Properties"].get("EventBusName", "default"))
                return f"arn:aws:events:{where}:rule/{name}" if bus == "default" else f"arn:aws:events:{where}:rule/{bus}/{name}"
        if (kind, attribute) in {("AWS::SQS::Queue", "QueueName"), ("AWS::Events::EventBus", "Name"),
                                 ("AWS::SNS::Topic", "TopicName")}:
            return name.rsplit(":", 1)[-1]
        if (kind, attribute) == ("AWS::SNS::Topic", "TopicArn"):
            return name
        raise Unresolvable(f"the local stack cannot resolve {logical}.{attribute}")

    def _kind(self, logical: str) -> str:
        if logical not in self.template["Resources"]:
            raise Unresolvable(f"{logical} is neither a parameter nor a resource of the template")
        return self.template["Resources"][logical]["Type"]

    def resources(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        return [(logical, self.resolve(resource.get("Properties", {})))
                for logical, resource in self.template["Resources"].items()
                if resource["Type"] == kind and self.included(resource)]

    def outputs(self) -> dict[str, Any]:
        """The outputs that have a value locally; those only AWS can give are left out."""
        values = {}
        for name, output in self.template.get("Outputs", {}).items():
            if "Condition" in output and not self.condition(output["Condition"]):
                continue
            try:
                values[name] = self.resolve(output["Value"])
            except Unresolvable:
                continue
        return values


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
    return r.outputs()


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
