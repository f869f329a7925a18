"""The AWS template: cfn-lint finds no errors, IAM is least privilege, workers are wired as settings read.

No network: the template is read with the local stack's own loader and checked as data.
"""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any, Iterator

import cfnlint
import pytest
from cfnlint.api import ManualArgs, lint_file

from infra.local_stack.resources import TEMPLATE, Resolver, Unresolvable, load_template
from shared.bootstrap import WORKERS
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[3]

# Actions IAM cannot scope to a resource: "*" is the only Resource it accepts for them. Each is
# granted only where the code calls it; any other "*" resource fails the test below.
STAR_RESOURCE_ALLOWED = {
    # submit counts each model's active jobs (Quarry's and anyone else's) before admitting a job;
    # every worker's watchdog lists them to end a job Bedrock no longer lists.
    "bedrock:ListModelInvocationJobs",
    # the task execution role logs in to ECR to pull the image; the pull itself is scoped to the repository.
    "ecr:GetAuthorizationToken",
    # preprocess checks a run's model against the models Bedrock serves before any job.
    "bedrock:ListFoundationModels",
    # every worker's watchdog sweeps Quarry's hosting that is not kept (shared/hosting_sweeper.py).
    "bedrock:ListProvisionedModelThroughputs", "bedrock:ListCustomModelDeployments",
}

# What each worker's handlers call (services/<worker>/handlers.py through shared/adapters), as IAM
# actions; every worker also consumes its own queue (reading its redrive policy) and parks invalid
# messages in its DLQ, and runs the watchdog (shared/watchdog.py): state in the table and its
# gsi1, messages to any worker, Bedrock jobs stopped when it fails a run, each model's active jobs
# listed to notice a job Bedrock lost.
CONSUMER = {"sqs:GetQueueUrl", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
            "sqs:SendMessage", "sqs:GetQueueAttributes", "dynamodb:UpdateItem"}
WATCHDOG = {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:Query",
            "sqs:GetQueueUrl", "sqs:SendMessage", "bedrock:StopModelInvocationJob", "bedrock:ListModelInvocationJobs",
            # the hosting sweeper
            "bedrock:ListProvisionedModelThroughputs", "bedrock:ListCustomModelDeployments",
            "bedrock:DeleteProvisionedModelThroughput", "bedrock:DeleteCustomModelDeployment"}
WORKER_ACTIONS = {
    "preprocess": CONSUMER | WATCHDOG | {"s3:GetObject", "s3:ListBucket", "s3:PutObject", "s3:AbortMultipartUpload",
                                         "bedrock:InvokeModel", "bedrock:ListFoundationModels",
                                         # an evaluation reads which foundation model a custom ARN is built on
                                         "bedrock:GetProvisionedModelThroughput", "bedrock:GetCustomModel",
                                         "bedrock:GetCustomModelDeployment"},
    "submit": CONSUMER | WATCHDOG | {"bedrock:CreateModelInvocationJob", "bedrock:TagResource",
                                     "bedrock:ListModelInvocationJobs", "iam:PassRole",
                                     # customize: the customization job and its hosting
                                     "bedrock:CreateModelCustomizationJob", "bedrock:StopModelCustomizationJob",
                                     "bedrock:CreateProvisionedModelThroughput", "bedrock:CreateCustomModelDeployment"},
    "poll": CONSUMER | WATCHDOG | {"bedrock:GetModelInvocationJob", "bedrock:GetModelCustomizationJob",
                                   "bedrock:GetProvisionedModelThroughput", "bedrock:GetCustomModelDeployment"},
    "postprocess": CONSUMER | WATCHDOG | {"s3:GetObject", "s3:ListBucket", "s3:PutObject", "s3:AbortMultipartUpload",
                                          "bedrock:InvokeModel"},
    "notify": CONSUMER | WATCHDOG | {"sns:Publish", "events:PutEvents"},
}
# The queues each worker sends to, besides its own DLQ: every one, since the watchdog relays outbox
# leftovers and re-drives stalled runs to whichever worker they are for.
WORKER_SENDS_TO = {worker: {"Preprocess", "Submit", "Poll", "Postprocess", "Notify"} for worker in WORKERS}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def resources_of(template: dict, kind: str) -> dict[str, dict]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def statements(value: Any, when: Resolver | None = None) -> Iterator[dict]:
    """Every IAM statement under `value`: in both branches of each Fn::If, or the branch `when` takes."""
    if isinstance(value, dict):
        if "Effect" in value and ("Action" in value or "NotAction" in value):
            yield value
            return
        if when is not None and set(value) == {"Fn::If"}:
            condition, if_true, if_false = value["Fn::If"]
            yield from statements(if_true if when.condition(condition) else if_false, when)
            return
        for item in value.values():
            yield from statements(item, when)
    elif isinstance(value, list):
        for item in value:
            yield from statements(item, when)


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def all_statements(template: dict) -> Iterator[tuple[str, dict]]:
    for name, resource in template["Resources"].items():
        for statement in statements(resource.get("Properties", {})):
            yield name, statement


def granted(role: dict, when: Resolver) -> set[str]:
    return {action for statement in statements(role["Properties"]["Policies"], when) if statement["Effect"] == "Allow"
            for action in as_list(statement["Action"])}


def deployed_with(template: dict, **parameters: str) -> Resolver:
    return Resolver(template, region="us-east-1", account="123456789012", parameters=parameters)


def iam_actions() -> dict[str, dict]:
    """cfn-lint's copy of the IAM service authorization reference: {service: {action: {Resources}}}."""
    data = json.loads((Path(cfnlint.__file__).parent / "data" / "AdditionalSpecs" / "Policies.json").read_text())
    return {service: spec["Actions"] for service, spec in data.items()}


# --- cfn-lint ----------------------------------------------------------------------------------------------
def lint(path: Path) -> list:
    return lint_file(path, config=ManualArgs(regions=["us-east-1", "us-west-2", "eu-west-1"]))


def test_cfn_lint_finds_no_errors_in_the_template():
    matches = lint(TEMPLATE)

    for match in matches:
        print(f"cfn-lint {match.rule.severity}: {match}")  # warnings are allowed, and shown with -s
    assert [str(m) for m in matches if m.rule.severity == "error"] == []


def test_cfn_lint_reports_an_error_it_is_shown(tmp_path: Path):
    broken = tmp_path / "template.yaml"
    broken.write_text(TEMPLATE.read_text().replace("VisibilityTimeout: 900", "VisibilityTimeout: lots", 1))

    assert any(m.rule.severity == "error" for m in lint(broken))


# --- IAM: no wildcards, "*" only where IAM allows nothing narrower ----------------------------------------
def test_no_allow_statement_grants_a_wildcard_action(template):
    for name, statement in all_statements(template):
        if statement["Effect"] != "Allow":
            continue  # a Deny (TLS only) takes rights away, so s3:* there narrows nothing
        assert "NotAction" not in statement, f"{name} allows NotAction"
        wild = [action for action in as_list(statement["Action"]) if "*" in action]
        assert wild == [], f"{name} allows wildcard actions {wild}"


def test_a_star_resource_is_granted_only_for_actions_without_resource_level_permissions(template):
    for name, statement in all_statements(template):
        if statement["Effect"] == "Allow" and "*" in as_list(statement.get("Resource", [])):
            assert set(as_list(statement["Action"])) <= STAR_RESOURCE_ALLOWED, f"{name}: {statement}"


def test_the_star_allow_list_holds_only_actions_iam_cannot_scope():
    actions = iam_actions()
    for action in STAR_RESOURCE_ALLOWED:
        service, verb = action.split(":")
        assert actions[service][verb.lower()].get("Resources") in (None, []), f"{action} can be scoped: scope it"


def test_every_action_granted_is_a_real_iam_action(template):
    actions = iam_actions()
    for name, statement in all_statements(template):
        for action in as_list(statement["Action"]):
            service, verb = action.split(":")
            assert verb == "*" or verb.lower() in actions[service], f"{name} grants {action}, which IAM does not have"


@pytest.mark.parametrize("worker", WORKERS)
def test_each_worker_role_grants_exactly_what_its_handlers_call(template, worker):
    role = template["Resources"][f"{worker.capitalize()}TaskRole"]

    assert granted(role, deployed_with(template)) == WORKER_ACTIONS[worker]


@pytest.mark.parametrize("worker", WORKERS)
def test_with_a_kms_key_only_the_workers_that_touch_s3_may_use_it(template, worker):
    role = template["Resources"][f"{worker.capitalize()}TaskRole"]

    extra = granted(role, deployed_with(template, KmsKeyArn="arn:aws:kms:us-east-1:1:key/k")) - WORKER_ACTIONS[worker]

    touches_s3 = "s3:GetObject" in WORKER_ACTIONS[worker]
    assert extra == ({"kms:Decrypt", "kms:GenerateDataKey"} if touches_s3 else set())


@pytest.mark.parametrize("worker", WORKERS)
def test_each_worker_consumes_only_its_own_queue_and_sends_only_where_it_must(template, worker):
    role = template["Resources"][f"{worker.capitalize()}TaskRole"]
    W = worker.capitalize()
    receive = [s for s in statements(role["Properties"]["Policies"]) if "sqs:ReceiveMessage" in as_list(s["Action"])]
    send = [s for s in statements(role["Properties"]["Policies"]) if "sqs:SendMessage" in as_list(s["Action"])]

    assert [s["Resource"] for s in receive] == [{"Fn::GetAtt": [f"{W}Queue", "Arn"]}]
    sent_to = {r["Fn::GetAtt"][0] for s in send for r in as_list(s["Resource"])}
    assert sent_to == {f"{W}DLQ"} | {f"{target}Queue" for target in WORKER_SENDS_TO[worker]}


def test_only_submit_may_pass_a_role_and_only_the_bedrock_role_to_bedrock(template):
    passing = [(name, s) for name, s in all_statements(template) if "iam:PassRole" in as_list(s["Action"])]

    assert [name for name, _ in passing] == ["SubmitTaskRole"]
    statement = passing[0][1]
    assert statement["Resource"] == {"Fn::GetAtt": ["BedrockBatchRole", "Arn"]}
    assert statement["Condition"] == {"StringEquals": {"iam:PassedToService": "bedrock.amazonaws.com"}}


def test_the_bedrock_role_trusts_bedrock_for_this_account_only(template):
    trust = template["Resources"]["BedrockBatchRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"]

    assert [s["Principal"] for s in trust] == [{"Service": "bedrock.amazonaws.com"}]
    assert trust[0]["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}


def test_the_bedrock_role_reads_only_job_inputs_and_writes_only_job_outputs(template):
    """Batch jobs read their chunks and write their output; customization jobs read their training
    data from the inputs bucket and write their metrics under the run's customization/ prefix."""
    role = template["Resources"]["BedrockBatchRole"]
    by_action: dict[str, list[dict]] = {}
    for s in statements(role["Properties"]["Policies"]):
        if s["Effect"] == "Allow":
            for a in as_list(s["Action"]):
                by_action.setdefault(a, []).append(s)

    def resources(action: str) -> set[str]:
        return {r["Fn::Sub"].split(":::", 1)[1] for s in by_action[action] for r in as_list(s["Resource"])}

    assert resources("s3:GetObject") == {"${WorkBucket}/runs/*/input/*", "${InputsBucket}/*"}
    assert resources("s3:PutObject") == {"${WorkBucket}/runs/*/output/*", "${WorkBucket}/runs/*/customization/*"}
    [listing] = by_action["s3:ListBucket"]
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["runs/*/input/*"]}}
    assert set(by_action) <= {"s3:GetObject", "s3:PutObject", "s3:ListBucket", "kms:Decrypt", "kms:GenerateDataKey"}


def test_each_rule_target_queue_accepts_messages_only_from_its_rules(template):
    rules = resources_of(template, "AWS::Events::Rule")
    policies = resources_of(template, "AWS::SQS::QueuePolicy")
    senders: dict[str, set[str]] = {}
    for rule_name, rule in rules.items():
        for target in rule["Properties"]["Targets"]:
            senders.setdefault(target["Arn"]["Fn::GetAtt"][0], set()).add(rule_name)

    for queue, rule_names in senders.items():
        [policy] = [p for p in policies.values() if p["Properties"]["Queues"] == [{"Ref": queue}]]
        [statement] = policy["Properties"]["PolicyDocument"]["Statement"]
        assert statement["Principal"] == {"Service": "events.amazonaws.com"}
        assert statement["Action"] == "sqs:SendMessage"
        assert statement["Resource"] == {"Fn::GetAtt": [queue, "Arn"]}
        sources = as_list(statement["Condition"]["ArnEquals"]["aws:SourceArn"])
        assert {s["Fn::GetAtt"][0] for s in sources} == rule_names


def test_the_bedrock_rule_passes_only_quarrys_jobs(template):
    pattern = template["Resources"]["BedrockJobsRule"]["Properties"]["EventPattern"]

    assert pattern["detail"]["batchJobName"] == [{"prefix": "quarry-"}]


# --- buckets, table, topic -----------------------------------------------------------------------------------
@pytest.mark.parametrize("bucket", ["InputsBucket", "WorkBucket", "ResultsBucket"])
def test_every_bucket_is_private_encrypted_and_tls_only(template, bucket):
    properties = template["Resources"][bucket]["Properties"]
    [policy] = [p for p in resources_of(template, "AWS::S3::BucketPolicy").values()
                if p["Properties"]["Bucket"] == {"Ref": bucket}]

    assert set(properties["PublicAccessBlockConfiguration"].values()) == {True}
    assert "ServerSideEncryptionByDefault" in properties["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    [deny] = policy["Properties"]["PolicyDocument"]["Statement"]
    assert (deny["Effect"], deny["Condition"]) == ("Deny", {"Bool": {"aws:SecureTransport": "false"}})


@pytest.mark.parametrize("parameters, algorithm", [({}, "AES256"), ({"KmsKeyArn": "arn:aws:kms:us-east-1:1:key/k"}, "aws:kms")])
def test_buckets_use_s3_keys_unless_a_kms_key_is_given(template, parameters, algorithm):
    r = Resolver(template, region="us-east-1", account="123456789012", parameters=parameters)

    for _, properties in r.resources("AWS::S3::Bucket"):
        rule = properties["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
        assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == algorithm


def test_intermediate_data_in_the_work_bucket_expires(template):
    [rule] = template["Resources"]["WorkBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]

    assert (rule["Prefix"], rule["ExpirationInDays"]) == ("runs/", {"Ref": "WorkDataExpirationDays"})


def test_the_table_has_point_in_time_recovery_ttl_and_encryption(template):
    table = template["Resources"]["StateTable"]["Properties"]

    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert table["SSESpecification"] == {"SSEEnabled": True}


def test_the_email_subscription_exists_only_when_an_address_is_given(template):
    subscription = template["Resources"]["NotificationEmailSubscription"]
    resolve = lambda email: Resolver(template, region="us-east-1", account="1",  # noqa: E731
                                     parameters={"NotificationEmail": email}).included(subscription)

    assert (resolve(""), resolve("ops@example.com")) == (False, True)


# --- workers on Fargate ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("worker", WORKERS)
def test_each_worker_runs_its_own_module_from_the_one_image(template, worker):
    [container] = template["Resources"][f"{worker.capitalize()}TaskDefinition"]["Properties"]["ContainerDefinitions"]

    assert container["Image"] == {"Ref": "ImageUri"}
    assert container["Command"] == ["python", "-m", f"services.{worker}.main"]


@pytest.mark.parametrize("worker", WORKERS)
def test_each_workers_environment_is_settings_it_reads_with_valid_defaults(template, worker, monkeypatch):
    [container] = template["Resources"][f"{worker.capitalize()}TaskDefinition"]["Properties"]["ContainerDefinitions"]
    r = Resolver(template, region="us-east-1", account="123456789012")
    fields = set(Settings.model_fields)
    for variable in container["Environment"]:
        name = variable["Name"]
        assert name.startswith("QUARRY_") and name[7:].lower() in fields, f"{name} is not a setting"
        try:
            value = r.resolve(variable["Value"])
        except Unresolvable:
            value = "arn:aws:iam::123456789012:role/made-by-aws"  # a resource only AWS creates
        monkeypatch.setenv(name, str(value))

    settings = Settings()

    names = {v["Name"] for v in container["Environment"]}
    assert {"QUARRY_BEDROCK_ROLE_ARN", "QUARRY_MODEL_CONCURRENCY", "QUARRY_TOPIC_ARN"} <= names
    assert settings.model_concurrency == {"*": 20}


@pytest.mark.parametrize("worker", WORKERS)
def test_an_idle_worker_runs_no_tasks_and_scales_on_its_queues_backlog(template, worker):
    W = worker.capitalize()
    resources = template["Resources"]
    alarm = resources[f"{W}BacklogAlarm"]["Properties"]

    assert template["Parameters"]["MinTasks"]["Default"] == 0
    assert resources[f"{W}Service"]["Properties"]["DesiredCount"] == {"Ref": "MinTasks"}
    assert resources[f"{W}ScalableTarget"]["Properties"]["MinCapacity"] == {"Ref": "MinTasks"}
    assert (alarm["MetricName"], alarm["Dimensions"][0]["Value"]) == (
        "ApproximateNumberOfMessagesVisible", {"Fn::GetAtt": [f"{W}Queue", "QueueName"]})
    assert alarm["AlarmActions"] == [{"Ref": f"{W}ScaleOutPolicy"}]
    assert resources[f"{W}IdleAlarm"]["Properties"]["AlarmActions"] == [{"Ref": f"{W}ScaleInPolicy"}]


def test_the_template_says_why_fargate_and_not_lambda():
    assert re.search(r"Why Fargate and not Lambda", TEMPLATE.read_text())


# --- the local stack still reads it --------------------------------------------------------------------------------
LOCAL_KINDS = ("AWS::S3::Bucket", "AWS::SQS::Queue", "AWS::Events::EventBus", "AWS::Events::Rule",
               "AWS::DynamoDB::Table", "AWS::SNS::Topic")


@pytest.mark.parametrize("parameters", [{}, {"KmsKeyArn": "arn:aws:kms:us-east-1:1:key/k", "EnableVersioning": "true",
                                             "NotificationEmail": "ops@example.com"}])
def test_every_resource_the_local_stack_makes_resolves_to_plain_values(template, parameters):
    r = Resolver(template, region="us-east-1", account="123456789012", parameters=parameters)

    for kind in LOCAL_KINDS:
        for name, properties in r.resources(kind):
            text = json.dumps(properties)
            assert "Fn::" not in text and '"Ref"' not in text, f"{name} keeps an intrinsic: {text}"


def test_outputs_only_aws_can_give_are_left_out_locally(template):
    outputs = Resolver(template, region="us-east-1", account="123456789012").outputs()

    assert outputs["InputsPrefix"] == "s3://quarry-inputs/incoming/"
    assert "ClusterName" not in outputs and "PreprocessQueueUrl" not in outputs


# --- make deploy ----------------------------------------------------------------------------------------------------
def test_make_deploy_pushes_the_image_and_deploys_this_template():
    result = subprocess.run(
        ["make", "-n", "deploy", "IMAGE=123456789012.dkr.ecr.eu-west-1.amazonaws.com/quarry:t1", "VPC_ID=vpc-1",
         "SUBNET_IDS=subnet-a,subnet-b", "EMAIL=ops@example.com", "STACK=quarry-test"],
        cwd=ROOT, capture_output=True, text=True, check=True)
    commands = " ".join(result.stdout.replace("\\\n", " ").split())

    assert "docker push 123456789012.dkr.ecr.eu-west-1.amazonaws.com/quarry:t1" in commands
    assert "aws cloudformation deploy --region eu-west-1 --template-file infra/aws/template.yaml" in commands
    assert "--stack-name quarry-test --capabilities CAPABILITY_NAMED_IAM" in commands
    for override in ("ImageUri=123456789012.dkr.ecr.eu-west-1.amazonaws.com/quarry:t1", "VpcId=vpc-1",
                     "SubnetIds=subnet-a,subnet-b", "NotificationEmail=ops@example.com"):
        assert override in commands


def test_every_deploy_parameter_override_names_a_template_parameter(template):
    makefile = (ROOT / "Makefile").read_text()
    overrides = re.search(r"--parameter-overrides(.*?)\$\(PARAMETERS\)", makefile, re.DOTALL).group(1)

    assert set(re.findall(r"(\w+)=", overrides)) <= set(template["Parameters"])



# --- what preprocess may read: the inputs bucket and AllowedInputLocations, as the code allows ----------
def preprocess_reads(template: dict, **parameters: str) -> list:
    role = template["Resources"]["PreprocessTaskRole"]
    return [statement["Resource"] for statement in statements(role["Properties"]["Policies"],
                                                              deployed_with(template, **parameters))
            if statement["Effect"] == "Allow" and "s3:GetObject" in as_list(statement["Action"])]


RESPONSE_CACHE = {"Fn::Sub": "arn:${AWS::Partition}:s3:::${ResultsBucket}/cache/*"}


def test_preprocess_reads_only_the_inputs_bucket_and_the_response_cache_by_default(template):
    assert preprocess_reads(template) == [{"Fn::Sub": "arn:${AWS::Partition}:s3:::${InputsBucket}/*"}, RESPONSE_CACHE]


def test_each_allowed_input_location_becomes_a_read_grant_of_that_prefix(template):
    [_, extra, cache] = preprocess_reads(template, AllowedInputLocations="acme-exports/quarry/,acme-archive")
    assert cache == RESPONSE_CACHE
    split = extra["Fn::Split"]
    text, variables = split[1]["Fn::Sub"]
    locations = variables["Locations"]["Fn::Join"]
    entries = "acme-exports/quarry/,acme-archive".split(",")  # what Fn::Split of the parameter gives
    arns = text.replace("${Locations}", locations[0].join(entries)).split(split[0])

    assert arns == ["arn:aws:s3:::acme-exports/quarry/*", "arn:aws:s3:::acme-archive*"]


def test_the_allowed_input_locations_pattern_accepts_buckets_and_prefixes_and_refuses_wildcards(template):
    pattern = re.compile(template["Parameters"]["AllowedInputLocations"]["AllowedPattern"])

    assert all(pattern.fullmatch(v) for v in ("", "acme-exports", "acme-exports/quarry/,acme-archive"))
    assert not any(pattern.fullmatch(v) for v in ("*", "acme-exports/*", "acme, other", "s3://acme"))


def test_every_worker_reads_the_allowed_inputs_and_models_the_template_is_given(template):
    for worker in WORKERS:
        [container] = template["Resources"][f"{worker.capitalize()}TaskDefinition"]["Properties"]["ContainerDefinitions"]
        env = {v["Name"]: v["Value"] for v in container["Environment"]}
        assert env["QUARRY_ALLOWED_INPUTS"] == {"Ref": "AllowedInputLocations"}
        assert env["QUARRY_ALLOWED_MODELS"] == {"Ref": "AllowedModels"}


def test_every_worker_reads_the_absent_job_grace_the_template_is_given_with_the_settings_default(template):
    # submit and the watchdog (every worker) time absent jobs; poll names the grace when it ends one.
    for worker in WORKERS:
        [container] = template["Resources"][f"{worker.capitalize()}TaskDefinition"]["Properties"]["ContainerDefinitions"]
        env = {v["Name"]: v["Value"] for v in container["Environment"]}
        assert env["QUARRY_ABSENT_JOB_GRACE_S"] == {"Ref": "AbsentJobGraceSeconds"}
    assert template["Parameters"]["AbsentJobGraceSeconds"]["Default"] == Settings.model_fields["absent_job_grace_s"].default


@pytest.mark.parametrize("variable, parameter, setting", [
    ("QUARRY_GATE_HOSTING_HOURS", "GateHostingHours", "gate_hosting_hours"),
    ("QUARRY_HOSTING_TTL_S", "HostingTtlSeconds", "hosting_ttl_s"),
])
def test_every_worker_reads_the_customize_hosting_settings_the_template_is_given_with_the_settings_default(
        template, variable, parameter, setting):
    # preprocess estimates the gate's hosting hours; the watchdog (every worker) sweeps hosting past its TTL.
    for worker in WORKERS:
        [container] = template["Resources"][f"{worker.capitalize()}TaskDefinition"]["Properties"]["ContainerDefinitions"]
        env = {v["Name"]: v["Value"] for v in container["Environment"]}
        assert env[variable] == {"Ref": parameter}
    declared = template["Parameters"][parameter]
    assert declared["Default"] == Settings.model_fields[setting].default
    # The smallest value the template accepts is one the settings accept too (else a worker would not start).
    assert getattr(Settings.model_validate({setting: declared["MinValue"]}), setting) == declared["MinValue"]


# --- the watchdog and the consumer, as every worker runs them ---------------------------------------------
class _Recorder:
    """A boto client that records each call as (IAM action, resource ARN) and answers just enough
    for a watchdog sweep to take every path: relay the outbox, fail a poison run (stop its job,
    cancel its pending one, send its RunFinished), re-drive a stalled one and reconcile the slots of
    a healthy one's model."""

    REGION, ACCOUNT = "us-east-1", "123456789012"

    def __init__(self, service: str, table: str, runs: list, jobs: dict, failures: dict, outbox: list) -> None:
        self.service, self.table, self.runs, self.jobs, self.failures, self.outbox = (
            service, table, runs, jobs, failures, outbox)
        self.calls: set[tuple[str, str]] = set()

    def _table_arn(self, index: str | None = None) -> str:
        arn = f"arn:aws:dynamodb:{self.REGION}:{self.ACCOUNT}:table/{self.table}"
        return f"{arn}/index/{index}" if index else arn

    def __getattr__(self, method: str):
        async def call(**kwargs: Any) -> dict:
            return self._answer(method, kwargs)
        return call

    def _answer(self, method: str, kw: dict) -> dict:
        verb = "".join(part.capitalize() for part in method.split("_"))
        if self.service == "dynamodb":
            if method == "transact_write_items":
                for item in kw["TransactItems"]:
                    (kind, _), = item.items()
                    self.calls.add((f"dynamodb:{'ConditionCheckItem' if kind == 'ConditionCheck' else kind + 'Item'}",
                                    self._table_arn()))
                return {}
            self.calls.add((f"dynamodb:{verb}", self._table_arn(kw.get("IndexName"))))
            if method == "query":
                values = kw["ExpressionAttributeValues"]
                if ":outbox" in values:
                    return {"Items": self.outbox}
                if ":runs" in values:
                    return {"Items": self.runs}
                return {"Items": self.jobs.get(values[":pk"]["S"], [])}
            if method == "get_item":
                key = kw["Key"]
                return {"Item": self.failures[key["pk"]["S"]]} if key["sk"]["S"] == "FAILURES" and key["pk"]["S"] in self.failures else {}
            return {}
        if self.service == "sqs":
            if method == "get_queue_url":
                self.calls.add(("sqs:GetQueueUrl", f"arn:aws:sqs:{self.REGION}:{self.ACCOUNT}:{kw['QueueName']}"))
                return {"QueueUrl": f"https://sqs.{self.REGION}.amazonaws.com/{self.ACCOUNT}/{kw['QueueName']}"}
            name = kw["QueueUrl"].rsplit("/", 1)[-1]
            self.calls.add((f"sqs:{verb}", f"arn:aws:sqs:{self.REGION}:{self.ACCOUNT}:{name}"))
            if method == "get_queue_attributes":
                return {"Attributes": {"RedrivePolicy": '{"maxReceiveCount": 5}'}}
            return {}
        if method == "list_model_invocation_jobs":
            self.calls.add((f"bedrock:{verb}", "*"))  # IAM has no resource for it
            return {"invocationJobSummaries": []}
        self.calls.add((f"bedrock:{verb}", kw["jobIdentifier"]))
        return {}


def _watchdog_world(settings: Settings) -> dict:
    """A poison run (a fatal failure, one job on Bedrock, one pending), a stalled run, a healthy run
    with a job on Bedrock and one outbox leftover for each worker, as the store writes them."""
    import datetime as dt

    from shared.adapters.store import RunStore
    from shared.domain.runs import Job, Run
    from shared.domain.spec import RunSpec

    store = RunStore(None, settings.table)
    long_ago = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
    spec = RunSpec(model_id="anthropic.claude-3-haiku-20240307-v1:0", template="{{ text }}")

    def run(run_id: str) -> Run:
        return Run(run_id=run_id, status="RUNNING", spec=spec, input_uri="s3://quarry-inputs/incoming/x.csv",
                   origin="cli", source_key=run_id, updated_at=long_ago)

    def job(run_id: str, index: int, **changes: Any) -> Job:
        changes.setdefault("updated_at", long_ago)
        return Job(run_id=run_id, job_key=f"{index:05d}-0", index=index, model_id=spec.model_id, chunk_uri="s3://w/c",
                   output_uri="s3://w/o/", records=100, bytes=10, first_row=0, end_row=100, **changes)

    poison, stalled, healthy = "a" * 32, "b" * 32, "c" * 32
    job_arn = f"arn:aws:bedrock:{_Recorder.REGION}:{_Recorder.ACCOUNT}:model-invocation-job/abc123"
    outbox = [{"pk": {"S": f"RUN#{stalled}"}, "sk": {"S": f"OUTBOX#{worker}"}, "worker": {"S": worker},
               "body": {"S": "{}"}, "delay_s": {"N": "0"}} for worker in WORKERS]
    return {
        "runs": [store._run_item(run(poison)), store._run_item(run(stalled)), store._run_item(run(healthy))],
        "jobs": {f"RUN#{poison}": [store._job_item(job(poison, 0, status="RUNNING", bedrock_arn=job_arn)),
                                   store._job_item(job(poison, 1))],
                 f"RUN#{stalled}": [store._job_item(job(stalled, 0))],
                 f"RUN#{healthy}": [store._job_item(job(healthy, 0, status="RUNNING", bedrock_arn=job_arn,
                                                        updated_at=dt.datetime.now(dt.timezone.utc)))]},
        "failures": {f"RUN#{poison}": {"crashes": {"N": "1"}, "last_error": {"S": "boom"}, "fatal": {"BOOL": True}}},
        "outbox": outbox,
    }


async def _calls_of_one_worker(worker: str, settings: Settings) -> set[tuple[str, str]]:
    """What one worker calls besides its handlers: its consumer's start and failure recording, and
    a watchdog sweep that takes every path."""
    from shared.adapters.bedrock import BatchJobs
    from shared.adapters.queues import Queues
    from shared.adapters.store import RunStore
    from shared.consumer import Consumer
    from shared.messages import SUBMIT_INBOX
    from shared.watchdog import sweep

    world = _watchdog_world(settings)
    db, sqs, bedrock = (_Recorder(service, settings.table, **world) for service in ("dynamodb", "sqs", "bedrock"))
    store, queues = RunStore(db, settings.table), Queues(sqs, settings)
    consumer = Consumer(sqs, queue_url=await queues.url(worker), dlq_url=await queues.url(f"{worker}-dlq"),
                        inbox=SUBMIT_INBOX, handle=None)
    await consumer._redrive_limit()
    await store.record_failure("a" * 32, "crashed")
    assert await store.take_lease("watchdog", worker, 90)
    done = await sweep(store=store, queues=queues, bedrock=BatchJobs(bedrock, role_arn="r", timeout_hours=24),
                       settings=settings)
    assert done.relayed == len(WORKERS) and set(done.failed) == {"a" * 32} and set(done.redriven) == {"b" * 32}
    return db.calls | sqs.calls | bedrock.calls


def _allows(statements_: list[dict], action: str, arn: str) -> bool:
    from fnmatch import fnmatchcase

    return any(action in as_list(s["Action"]) and any(fnmatchcase(arn, r) for r in as_list(s["Resource"]))
               for s in statements_ if s["Effect"] == "Allow")


@pytest.mark.parametrize("worker", WORKERS)
async def test_each_worker_role_allows_every_call_its_watchdog_and_consumer_make(template, worker):
    when = deployed_with(template)
    settings = Settings(table=when.physical_name("StateTable"), queue_prefix=when.parameters["Prefix"])
    role = []
    for statement in statements(template["Resources"][f"{worker.capitalize()}TaskRole"]["Properties"]["Policies"], when):
        try:
            role.append(when.resolve(statement))
        except Unresolvable:
            continue  # iam:PassRole of the Bedrock role, which only AWS creates

    calls = await _calls_of_one_worker(worker, settings)

    assert {action for action, _ in calls} >= {"dynamodb:Query", "dynamodb:DeleteItem", "dynamodb:UpdateItem",
                                               "sqs:SendMessage", "sqs:GetQueueAttributes",
                                               "bedrock:StopModelInvocationJob", "bedrock:ListModelInvocationJobs"}
    assert any(arn.endswith("/index/gsi1") for _, arn in calls), "the watchdog lists runs and the outbox on gsi1"
    denied = sorted(call for call in calls if not _allows(role, *call))
    assert denied == [], f"{worker}'s role does not allow what its watchdog and consumer call"
