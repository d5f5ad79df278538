"""Least privilege: each Lambda function's own IAM policy (`.chalice/policy-*.json`) allows every
AWS call that function makes, and refuses tables, queues and topics it does not name.

moto's IAM enforcement (`INITIAL_NO_AUTH_ACTION_COUNT`) cannot prove this: it checks resources
for SQS only (DynamoDB, SNS, SES and Secrets Manager are judged on the action alone, as if every
statement said `"Resource": "*"`), and it is switched on for the whole server, which every other
test shares. So this test records instead: while a function runs a representative event on the
local stack, every boto3 client of `chalicelib.aws` reports each call it is about to make
(botocore's `before-parameter-build`), and a small IAM evaluator (action and resource
wildcards, `NotResource`, explicit denies) checks the call against that function's policy,
resolved for the test stage from the same template the local stack was made from.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import re
import sys
import unicodedata
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from chalice.app import SQSEventConfig
from chalice.local import LambdaContext
from chalice.test import Client
from conftest import TOKEN_SECRET, X_SECRET, Stack
from factories import customer_record
from listening_factories import TOPIC, PostMaker

import app as forewarn_app
from chalicelib import aws, queues, runtime, secrets, unsubscribe, x
from chalicelib.auth import issue_local_token
from chalicelib.config import settings
from chalicelib.console import CSRF_FIELD, csrf_token, new_signin_secret
from forewarn_cli.local import infra
from forewarn_cli.local.events import scheduled_event, sqs_record
from forewarn_cli.local.statuspage_server import StatuspageServer

PROJECT = Path(__file__).resolve().parents[1]
CHALICE_DIR = PROJECT / ".chalice"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
STAGE = "test"
REGION = "us-east-1"
PARTITION = "aws"
SENDER = "alerts@forewarn.example"
OPS_EMAIL = "ops@forewarn.example"
EASYPOST_SECRET = "easypost-signing-secret"
SOURCE_KEY = "noc-signing-key"
UNSUBSCRIBE_KEY = "unsubscribe-signing-key"

# Operations AWS answers without asking IAM (the caller proves who it is some other way).
UNAUTHENTICATED = frozenset({("cognito-idp", "InitiateAuth")})


# -- the policies -------------------------------------------------------------------------------


def function_policy_files() -> dict[str, Path]:
    """Each Lambda function of the app and the policy file `.chalice/config.json` gives it."""
    config = json.loads((CHALICE_DIR / "config.json").read_text())
    assert config.get("autogen_policy") is False
    functions = config.get("lambda_functions", {})
    return {name: CHALICE_DIR / spec["iam_policy_file"] for name, spec in functions.items()}


def chalice_functions() -> set[str]:
    """The functions Chalice makes of app.py: the API handler, each authorizer, each event
    handler (SQS and schedules)."""
    events = {source.name for source in forewarn_app.app.event_sources}
    return {"api_handler"} | events | {a.name for a in _authorizers()}


def _authorizers() -> list[Any]:
    app = forewarn_app.app
    return [app.handler_map[config.name] for config in app.builtin_auth_handlers]


def batch_size(function: str) -> int:
    for source in forewarn_app.app.event_sources:
        if isinstance(source, SQSEventConfig) and source.name == function:
            return int(source.batch_size)
    raise AssertionError(f"{function} consumes no queue")


@dataclass
class Resolver:
    """Resolves CloudFormation intrinsics as the deployed stack would, for the local stack."""

    values: dict[str, str]

    def __call__(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self(item) for item in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (name, argument), *_ = value.items()
            if name == "Ref":
                return self.values[argument]
            if name == "Fn::GetAtt":
                logical, attribute = argument
                return self.values[f"{logical}.{attribute}"]
            if name == "Fn::Sub":
                text, variables = (argument, {}) if isinstance(argument, str) else argument
                known = {**self.values, **{k: self(v) for k, v in variables.items()}}
                return re.sub(r"\$\{([^}]+)\}", lambda m: known[m.group(1)], text)
            if name == "Fn::Select":
                index, items = argument
                return self(items)[int(index)]
            if name == "Fn::Split":
                separator, text = argument
                return str(self(text)).split(separator)
            if name == "Fn::Join":
                separator, items = argument
                return separator.join(str(item) for item in self(items))
        return {key: self(item) for key, item in value.items()}


def local_resolver() -> Resolver:
    """Physical names and ARNs of the template's resources as the local stack made them."""
    template = infra.load_template()
    account = str(aws.client("sts").get_caller_identity()["Account"])
    values = {
        "AWS::AccountId": account,
        "AWS::Region": REGION,
        "AWS::Partition": PARTITION,
        "AWS::StackName": f"{infra.STACK_NAME}-{STAGE}",
        "Stage": STAGE,
        "SenderEmail": SENDER,
        "OpsEmail": "",
    }
    stack = aws.client("cloudformation").describe_stack_resources(
        StackName=f"{infra.STACK_NAME}-{STAGE}"
    )
    physical = {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in stack["StackResources"]}
    named = Resolver(values)
    for logical, resource in template["Resources"].items():
        if not infra.condition_holds(template, resource, values):
            continue  # not made for this stage (the dev stage's own secrets)
        kind, props = resource["Type"], resource.get("Properties", {})
        if kind == "AWS::DynamoDB::Table":
            table = aws.client("dynamodb").describe_table(TableName=named(props["TableName"]))
            values[logical] = table["Table"]["TableName"]
            values[f"{logical}.Arn"] = table["Table"]["TableArn"]
        elif kind == "AWS::SQS::Queue":
            sqs = aws.client("sqs")
            url = sqs.get_queue_url(QueueName=named(props["QueueName"]))["QueueUrl"]
            attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
            values[logical] = url
            values[f"{logical}.Arn"] = attributes["Attributes"]["QueueArn"]
            values[f"{logical}.QueueName"] = named(props["QueueName"])
        elif kind == "AWS::SNS::Topic":
            values[logical] = f"arn:{PARTITION}:sns:{REGION}:{account}:{named(props['TopicName'])}"
            values[f"{logical}.TopicName"] = named(props["TopicName"])
        elif kind == "AWS::SecretsManager::Secret":
            secret = aws.client("secretsmanager").describe_secret(SecretId=named(props["Name"]))
            values[logical] = secret["ARN"]
        elif kind == "AWS::KMS::Key":
            key = aws.client("kms").describe_key(KeyId=physical[logical])["KeyMetadata"]
            values[logical] = key["KeyId"]
            values[f"{logical}.Arn"] = key["Arn"]
        elif kind == "AWS::SES::ConfigurationSet":
            values[logical] = named(props["Name"])
    return Resolver(values)


def load_policy(path: Path, resolve: Resolver) -> dict[str, Any]:
    policy: dict[str, Any] = resolve(json.loads(path.read_text()))
    return policy


# -- the evaluator ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """What IAM is asked: may this principal perform `action` on `resource`?"""

    action: str
    resource: str


def _pattern(text: str, *, case_sensitive: bool) -> re.Pattern[str]:
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in text)
    return re.compile(body, 0 if case_sensitive else re.IGNORECASE)


def _any_match(patterns: Any, value: str, *, case_sensitive: bool) -> bool:
    items = patterns if isinstance(patterns, list) else [patterns]
    return any(_pattern(str(p), case_sensitive=case_sensitive).fullmatch(value) for p in items)


def _statement_applies(statement: Mapping[str, Any], request: Request) -> bool:
    if "Action" in statement:
        action_ok = _any_match(statement["Action"], request.action, case_sensitive=False)
    else:
        action_ok = not _any_match(statement["NotAction"], request.action, case_sensitive=False)
    if "Resource" in statement:
        resource_ok = _any_match(statement["Resource"], request.resource, case_sensitive=True)
    else:
        resource_ok = not _any_match(
            statement["NotResource"], request.resource, case_sensitive=True
        )
    return action_ok and resource_ok


def is_allowed(policy: Mapping[str, Any], request: Request) -> bool:
    """IAM's rule for one identity policy: an explicit deny wins, then any allow, else no.

    A statement with a Condition is never taken as allowing: the calls recorded here carry no
    context to judge it by (the policies use conditions only on the KMS key, which the local
    stack never calls)."""
    statements = policy["Statement"]
    for statement in statements:
        if statement["Effect"] == "Deny" and _statement_applies(statement, request):
            return False
    return any(
        statement["Effect"] == "Allow"
        and "Condition" not in statement
        and _statement_applies(statement, request)
        for statement in statements
    )


# -- calls, and what IAM is asked for each --------------------------------------------------------


@dataclass(frozen=True)
class Call:
    function: str
    service: str
    operation: str
    params: Mapping[str, Any]

    def __str__(self) -> str:
        return f"{self.function}: {self.service}.{self.operation}"


@dataclass
class Arns:
    """Turns the names a call uses into the ARNs IAM judges."""

    account: str
    secret_arns: dict[str, str]

    def table(self, name: str, index: str | None = None) -> str:
        arn = f"arn:{PARTITION}:dynamodb:{REGION}:{self.account}:table/{name}"
        return f"{arn}/index/{index}" if index else arn

    def queue(self, url_or_name: str) -> str:
        name = url_or_name.rstrip("/").rsplit("/", 1)[-1]
        return f"arn:{PARTITION}:sqs:{REGION}:{self.account}:{name}"

    def secret(self, secret_id: str) -> str:
        return secret_id if secret_id.startswith("arn:") else self.secret_arns[secret_id]

    def ses(self, kind: str, name: str) -> str:
        return f"arn:{PARTITION}:ses:{REGION}:{self.account}:{kind}/{name}"


_DYNAMODB_ITEM = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
    "Get": "GetItem",
}
_SQS_BATCH = {
    "SendMessageBatch": "SendMessage",
    "DeleteMessageBatch": "DeleteMessage",
    "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
}


def requests_for(call: Call, arns: Arns) -> list[Request]:
    """The IAM requests AWS makes of one API call (a transaction asks once per item)."""
    p, op = call.params, call.operation
    if call.service == "dynamodb":
        if op in {"TransactWriteItems", "TransactGetItems"}:
            found = []
            for item in p["TransactItems"]:
                ((kind, body),) = item.items()
                found.append(
                    Request(f"dynamodb:{_DYNAMODB_ITEM[kind]}", arns.table(body["TableName"]))
                )
            return found
        if op in {"BatchGetItem", "BatchWriteItem"}:
            return [Request(f"dynamodb:{op}", arns.table(name)) for name in p["RequestItems"]]
        return [Request(f"dynamodb:{op}", arns.table(p["TableName"], p.get("IndexName")))]
    if call.service == "sqs":
        action = f"sqs:{_SQS_BATCH.get(op, op)}"
        if op == "GetQueueUrl":
            return [Request(action, arns.queue(p["QueueName"]))]
        if op == "StartMessageMoveTask":
            return [Request(action, p["SourceArn"])]
        return [Request(action, arns.queue(p["QueueUrl"]))]
    if call.service == "sns":
        # A text to a phone number names no topic: IAM sees no topic ARN.
        target = p.get("TopicArn") or p.get("TargetArn") or p["PhoneNumber"]
        return [Request(f"sns:{op}", target)]
    if call.service == "ses":
        sender = str(p["Source"]).rsplit("<", 1)[-1].rstrip(">")
        domain = sender.rsplit("@", 1)[-1]
        # SES asks about the identity that sends and the configuration set that applies (the
        # identity's default): both must be allowed.
        return [
            Request(f"ses:{op}", resource)
            for resource in (
                arns.ses("identity", sender),
                arns.ses("identity", domain),
                arns.ses("configuration-set", f"forewarn-{STAGE}"),
            )
        ]
    if call.service == "secretsmanager":
        return [Request(f"secretsmanager:{op}", arns.secret(p["SecretId"]))]
    raise AssertionError(f"{call}: no IAM mapping for this service yet; add one")


def refused(call: Call, policy: Mapping[str, Any], arns: Arns) -> list[Request]:
    if (call.service, call.operation) in UNAUTHENTICATED:
        return []
    requests = requests_for(call, arns)
    if call.service == "ses":
        # Either identity may be the one SES checks: allowed if one of them is, and the set.
        identities, config_set = requests[:2], requests[2]
        missing = [] if any(is_allowed(policy, r) for r in identities) else identities
        return missing + ([] if is_allowed(policy, config_set) else [config_set])
    return [request for request in requests if not is_allowed(policy, request)]


# -- recording ----------------------------------------------------------------------------------


@dataclass
class Recorder:
    """Attributes each AWS call to the function running when it is made.

    One function runs at a time (the scenario is sequential), so a plain attribute serves even
    for calls made on the threads a handler starts."""

    calls: list[Call] = field(default_factory=list)
    current: str | None = None
    last: str | None = None

    def hook(self, params: Mapping[str, Any], model: Any, **_: Any) -> None:
        if self.current is not None:
            service = str(model.service_model.service_name)
            self.calls.append(Call(self.current, service, str(model.name), copy.deepcopy(params)))

    @contextmanager
    def running(self, function: str) -> Iterator[None]:
        if function != self.last:
            # Each function runs in its own containers: nothing another one read and cached
            # (a secret, a queue's URL) may spare it a call its own policy must allow.
            forget_process_caches()
            self.last = function
        outer, self.current = self.current, function
        try:
            yield
        finally:
            self.current = outer

    def by_function(self) -> dict[str, list[Call]]:
        found: dict[str, list[Call]] = {}
        for call in self.calls:
            found.setdefault(call.function, []).append(call)
        return found


def forget_process_caches() -> None:
    secrets.reset()
    x.reset()
    queues.forget_queue_urls()
    if "chalicelib.status_sources" in sys.modules:
        sys.modules["chalicelib.status_sources"].reset_secret_cache()


def install(recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every client `chalicelib.aws` hands out reports to the recorder; the authorizer runs as
    its own function."""
    original = aws.client
    hooked: set[int] = set()

    def recording_client(service: str) -> Any:
        client = original(service)
        if id(client) not in hooked:
            hooked.add(id(client))
            client.meta.events.register("before-parameter-build", recorder.hook)
        return client

    monkeypatch.setattr(aws, "client", recording_client)
    for authorizer in _authorizers():
        func = authorizer.func

        def as_authorizer(
            request: Any, func: Callable[[Any], Any] = func, name: str = authorizer.name
        ) -> Any:
            with recorder.running(name):
                return func(request)

        monkeypatch.setattr(authorizer, "func", as_authorizer)


# -- the scenario -------------------------------------------------------------------------------


def token(role: str) -> str:
    return issue_local_token("auditor", role, secret=TOKEN_SECRET, issuer="forewarn-local")


@dataclass
class Scenario:
    client: Client
    recorder: Recorder
    x_server: Any

    def api(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        role: str | None = "ops",
        headers: Mapping[str, str] | None = None,
        expect: int = 400,
    ) -> Any:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode() if body else b""
        sent = {"Content-Type": "application/json", **(headers or {})}
        if role:
            sent["Authorization"] = f"Bearer {token(role)}"
        with self.recorder.running("api_handler"):
            response = self.client.http.request(method, path, headers=sent, body=raw)
        assert response.status_code < expect, (method, path, response.body[:300])
        text = response.body.decode()
        return json.loads(text) if text and text.lstrip().startswith(("{", "[")) else text

    def page(self, path: str, role: str = "ops") -> str:
        headers = {"Cookie": f"fw_session={token(role)}"}
        with self.recorder.running("api_handler"):
            response = self.client.http.request("GET", path, headers=headers, body=b"")
        assert response.status_code < 400, (path, response.body[:300])
        return response.body.decode()

    def invoke(self, name: str, event: dict[str, Any]) -> Any:
        context = LambdaContext(function_name=name, memory_size=128, max_runtime_ms=60_000)
        with self.recorder.running(name):
            return forewarn_app.app.handler_map[name](event, context)

    def drain(self, name: str, queue: str, *, rounds: int = 20) -> int:
        """Run an SQS consumer as Lambda's poller would, under the function's own role:
        receive, invoke, delete what succeeded. Returns the number of messages handled."""
        handled = 0
        batch = batch_size(name)
        for _ in range(rounds):
            with self.recorder.running(name):
                sqs = aws.client("sqs")
                url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
                arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
                    "Attributes"
                ]["QueueArn"]
                messages = sqs.receive_message(
                    QueueUrl=url,
                    MaxNumberOfMessages=batch,
                    AttributeNames=["All"],
                    MessageAttributeNames=["All"],
                ).get("Messages", [])
            if not messages:
                return handled
            event = {"Records": [sqs_record(m, arn, REGION) for m in messages]}
            result = self.invoke(name, event)
            failed = {f["itemIdentifier"] for f in (result or {}).get("batchItemFailures", [])}
            with self.recorder.running(name):
                for message in messages:
                    if message["MessageId"] not in failed:
                        sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            handled += len(messages)
        return handled

    def schedule(self, name: str) -> Any:
        return self.invoke(name, scheduled_event(name, REGION, datetime.now(UTC)))


def queue(name: str) -> str:
    return f"forewarn-{STAGE}-{name}"


def _sns_envelope(message: Mapping[str, Any], topic: str) -> str:
    return json.dumps({"Type": "Notification", "TopicArn": topic, "Message": json.dumps(message)})


def upstream_incident() -> dict[str, Any]:
    """A Statuspage incident two minutes old on a component the source maps to customers."""
    at = (datetime.now(UTC) - timedelta(minutes=2)).isoformat()
    component = {"code": "mobile-data", "name": "mobile-data"}
    return {
        "id": "up-1",
        "name": "Mobile data down",
        "status": "investigating",
        "impact": "major",
        "created_at": at,
        "shortlink": "https://stspg.io/up-1",
        "components": [{"id": "mobile-data", "name": "mobile-data", "status": "major_outage"}],
        "incident_updates": [
            {
                "id": "u-1",
                "status": "investigating",
                "body": "Mobile data is down.",
                "display_at": at,
                "created_at": at,
                "affected_components": [
                    {**component, "old_status": "operational", "new_status": "major_outage"}
                ],
            }
        ],
    }


def run_scenario(scenario: Scenario, server: StatuspageServer) -> None:
    api, page = scenario.api, scenario.page

    # Customers, an incident and a broadcast that goes out on both channels.
    records = [customer_record(i) for i in range(2)] + [
        customer_record(i, channels=("email", "sms")) for i in range(2, 4)
    ]
    api("POST", "/api/customers", {"customers": records})
    api("GET", "/api/customers/c0000")
    api("GET", f"/api/lookup?q={records[0]['phone'].replace('+', '%2B')}")
    incident = api(
        "POST",
        "/api/incidents",
        {"title": "Mobile data outage", "services": ["mobile"], "regions": ["north"]},
    )
    incident_id = incident["incident_id"]
    api("GET", f"/api/incidents/{incident_id}")
    api("PATCH", f"/api/incidents/{incident_id}", {"status": "identified"})
    broadcast = api(
        "POST",
        "/api/broadcasts",
        {
            "incident_id": incident_id,
            "channels": ["sms", "email"],
            "variables": {"workaround": "Wi-Fi calling still works"},
        },
    )
    broadcast_id = broadcast["broadcast_id"]
    api("GET", f"/api/broadcasts/{broadcast_id}")
    api("GET", f"/api/broadcasts/{broadcast_id}/preview")
    api("GET", f"/api/broadcasts/{broadcast_id}/dry-run")
    api("POST", f"/api/broadcasts/{broadcast_id}/approve")
    api("POST", f"/api/broadcasts/{broadcast_id}/send")
    assert scenario.drain("plan_broadcast", queue("planner")) > 0
    scenario.schedule("sweep_broadcasts")
    assert scenario.drain("deliver_notices", queue("deliveries")) > 0
    scenario.schedule("sweep_broadcasts")
    api("GET", f"/api/broadcasts/{broadcast_id}/reconcile")
    api("GET", f"/api/incidents/{incident_id}/broadcasts")
    # An update goes to the incident's frozen audience (read back from its snapshot); inside
    # the digest window it is held for the customer's digest.
    update = api(
        "POST",
        "/api/broadcasts",
        {"incident_id": incident_id, "phase": "update", "channels": ["sms", "email"]},
    )
    api("POST", f"/api/broadcasts/{update['broadcast_id']}/approve")
    api("POST", f"/api/broadcasts/{update['broadcast_id']}/send")
    assert scenario.drain("plan_broadcast", queue("planner")) > 0
    assert scenario.drain("deliver_notices", queue("deliveries")) > 0
    halted = api(
        "POST",
        "/api/broadcasts",
        {"incident_id": incident_id, "phase": "update", "channels": ["sms"]},
    )
    api("POST", f"/api/broadcasts/{halted['broadcast_id']}/approve")
    api("POST", f"/api/broadcasts/{halted['broadcast_id']}/halt")

    # Opt-outs and bounces, as SNS delivers them to the feedback queue; one more that had
    # reached the dead-letter queue is redriven first.
    sqs = aws.client("sqs")
    feedback = sqs.get_queue_url(QueueName=queue("feedback"))["QueueUrl"]
    dead = sqs.get_queue_url(QueueName=queue("feedback-dlq"))["QueueUrl"]
    help_ = {"originationNumber": records[0]["phone"], "messageBody": "HELP"}
    sqs.send_message(QueueUrl=dead, MessageBody=_sns_envelope(help_, "topic"))
    assert api("POST", "/api/queues/feedback/redrive")["moved"] == 1
    inbound = {"originationNumber": records[1]["phone"], "messageBody": "STOP"}
    bounce = {
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": "Permanent",
            "bouncedRecipients": [{"emailAddress": records[2]["email"]}],
        },
    }
    for message in (inbound, bounce):
        sqs.send_message(QueueUrl=feedback, MessageBody=_sns_envelope(message, "topic"))
    assert scenario.drain("apply_feedback", queue("feedback")) == 3

    # Parcels: a registry, a signed carrier event, the customer's notice.
    tracking = json.loads(
        (FIXTURES / "shipments" / "easypost_tracker_updated_delivered.json").read_text()
    )
    code = tracking["result"]["tracking_code"]
    api(
        "POST",
        "/api/shipments",
        {
            "shipments": [
                {
                    "tracking_code": code,
                    "carrier": "USPS",
                    "customer_id": "c0000",
                    "order_id": "o-1",
                    "direction": "outbound",
                }
            ]
        },
    )
    api("GET", f"/api/shipments/{code}")
    api("GET", "/api/customers/c0000/shipments")
    body = json.dumps(tracking).encode()
    key = unicodedata.normalize("NFKD", EASYPOST_SECRET).encode()
    signature = "hmac-sha256-hex=" + hmac.new(key, body, "sha256").hexdigest()
    api("POST", "/webhooks/easypost", body, role=None, headers={"x-hmac-signature": signature})
    assert scenario.drain("deliver_customer_notices", queue("notices")) > 0

    # Status sources: one polled, one pushing signed webhooks.
    mobile_north = {"services": ["mobile"], "regions": ["north"]}
    api(
        "POST",
        "/api/sources",
        {
            "source_id": "carrier",
            "kind": "statuspage",
            "url": server.url,
            "components": {"mobile-data": mobile_north},
            "policy": {"mode": "auto", "auto_min_impact": "minor"},
        },
    )
    api("GET", "/api/sources")
    api("GET", "/api/sources/carrier")
    api("PATCH", "/api/sources/carrier", {"poll_seconds": 60})
    scenario.schedule("poll_status_sources")
    assert scenario.drain("plan_broadcast", queue("planner")) > 0
    api("POST", "/api/sources/carrier/poll")
    api(
        "POST",
        "/api/sources",
        {
            "source_id": "noc",
            "kind": "webhook",
            "components": {"broadband-east": {"services": ["broadband"], "regions": ["east"]}},
            "policy": {"mode": "auto", "auto_min_impact": "major"},
        },
    )
    pushed = json.loads((FIXTURES / "status" / "signed_webhook.json").read_text())
    pushed["incident"]["updates"][0]["display_at"] = (
        datetime.now(UTC) - timedelta(minutes=3)
    ).isoformat()
    body = json.dumps(pushed).encode()
    signature = "sha256=" + hmac.new(SOURCE_KEY.encode(), body, hashlib.sha256).hexdigest()
    api(
        "POST",
        "/webhooks/sources/noc",
        body,
        role=None,
        headers={"X-Forewarn-Signature": signature},
    )

    # Social listening: posts on the local X server, a scan that opens an issue and tells ops.
    api(
        "PUT",
        "/api/topics/acme",
        {"query": TOPIC.query, "services": ["mobile"], "places": {"Dallas, TX": "south"}},
    )
    now = datetime.now(UTC)
    maker = PostMaker()
    scenario.x_server.publish(
        *maker.chatter(now - timedelta(minutes=150), 120),
        *maker.outage(now - timedelta(minutes=25), 15),
    )
    scenario.schedule("scan_social_feeds")
    api("GET", "/api/topics")
    issues = api("GET", "/api/emerging")["issues"]
    flags = api("GET", "/api/flags", role="social")
    if issues:
        issue_id = issues[0]["issue_id"]
        api("GET", f"/api/emerging/{issue_id}")
        api("POST", f"/api/emerging/{issue_id}/incident", {})
    posts = [flag["post"]["id"] if "post" in flag else flag["id"] for flag in flags["flags"]]
    if posts:
        api(
            "POST",
            f"/api/flags/{posts[0]}/reply",
            {"template": "custom", "text": "Sorry! We are on it."},
            role="social",
        )
        if len(posts) > 1:
            api("POST", f"/api/flags/{posts[1]}/dismiss", {}, role="social")

    # The console's pages read what the routes above wrote.
    page("/console")
    page("/console/flags", role="social")
    page(f"/console/incidents/{incident_id}")
    page(f"/console/broadcasts/{broadcast_id}")
    page("/console/broadcasts/new")
    page(f"/console/customers?q={records[0]['email']}")
    page("/console/audit")
    # Signing in (AUTH_MODE=local) reads the console's users; a wrong password is enough.
    nonce = new_signin_secret()
    form = urlencode({"username": "olivia.ops", "password": "wrong", CSRF_FIELD: csrf_token(nonce)})
    with scenario.recorder.running("api_handler"):
        response = scenario.client.http.request(
            "POST",
            "/console/sign-in",
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Cookie": f"fw_signin={nonce}",
            },
            body=form.encode(),
        )
    assert response.status_code == 401

    # The one-click unsubscribe link of an email.
    with scenario.recorder.running("api_handler"):
        link = unsubscribe.link(settings(), records[3]["email"])
    assert link is not None
    path = link.removeprefix(settings().public_url)
    with scenario.recorder.running("api_handler"):
        response = scenario.client.http.request(
            "POST",
            path,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            body=b"List-Unsubscribe=One-Click",
        )
    assert response.status_code < 400, response.body[:300]


@dataclass(frozen=True)
class Recording:
    calls: dict[str, list[Call]]
    policies: dict[str, dict[str, Any]]
    arns: Arns
    resolve: Resolver


_recording: list[Recording] = []


@pytest.fixture
def recording(stack: Stack, brand_x: Any, monkeypatch: pytest.MonkeyPatch) -> Recording:
    """The whole scenario, recorded once for this module (it takes a while)."""
    if _recording:
        return _recording[0]
    topic = f"arn:{PARTITION}:sns:{REGION}:123456789012:forewarn-{STAGE}-ops"
    monkeypatch.setenv("OPS_TOPIC_ARN", topic)
    monkeypatch.setenv("OPS_EMAIL", OPS_EMAIL)
    monkeypatch.setenv("SEND_RATE_SMS", "100")
    monkeypatch.setenv("SEND_RATE_EMAIL", "100")
    monkeypatch.setenv("DIGEST_WINDOW_SECONDS", "900")
    monkeypatch.setenv("PUBLIC_URL", "http://127.0.0.1:8000")
    aws.client("ses").verify_email_identity(EmailAddress=OPS_EMAIL)
    aws.client("secretsmanager").put_secret_value(
        SecretId=f"forewarn/{STAGE}/webhooks",
        SecretString=json.dumps(
            {
                "easypost": EASYPOST_SECRET,
                "sources.noc": SOURCE_KEY,
                "unsubscribe": UNSUBSCRIBE_KEY,
            }
        ),
    )
    aws.client("secretsmanager").put_secret_value(
        SecretId=f"forewarn/{STAGE}/x", SecretString=json.dumps(X_SECRET)
    )
    aws.client("secretsmanager").create_secret(
        Name=f"forewarn/{STAGE}/console-users", SecretString="{}"
    )
    runtime.reset()
    secrets.reset()
    # Read now: Chalice's test client sets the dev stage's variables around each request.
    assert settings().names.stage == STAGE
    recorder = Recorder()
    install(recorder, monkeypatch)
    upstream = StatuspageServer([upstream_incident()])
    with upstream as server, Client(forewarn_app.app) as client:
        run_scenario(Scenario(client, recorder, brand_x), server)
    resolve = local_resolver()
    account = resolve.values["AWS::AccountId"]
    secret_arns = {
        name: aws.client("secretsmanager").describe_secret(SecretId=name)["ARN"]
        for name in {
            str(call.params["SecretId"])
            for call in recorder.calls
            if call.service == "secretsmanager"
        }
    }
    policies = {name: load_policy(path, resolve) for name, path in function_policy_files().items()}
    _recording.append(
        Recording(recorder.by_function(), policies, Arns(account, secret_arns), resolve)
    )
    return _recording[0]


# -- the tests ----------------------------------------------------------------------------------


def test_every_function_of_the_app_has_its_own_policy_file() -> None:
    files = function_policy_files()
    assert set(files) == chalice_functions()
    for name, path in files.items():
        assert path.is_file(), name
        assert json.loads(path.read_text())["Version"] == "2012-10-17", name
    assert len(set(files.values())) == len(files), "two functions share a policy file"


def test_every_call_each_function_makes_is_allowed_by_its_own_policy(
    recording: Recording,
) -> None:
    problems = [
        f"{call} {request.action} on {request.resource}"
        for function, calls in recording.calls.items()
        for call in calls
        for request in refused(call, recording.policies[function], recording.arns)
    ]
    assert not problems, "refused:\n" + "\n".join(sorted(set(problems)))


def test_the_scenario_exercises_every_function_that_calls_aws(recording: Recording) -> None:
    # The authorizer checks a signature and touches nothing in AWS; every other function must
    # have been seen at work, or the check above proves nothing about it.
    assert set(recording.calls) == chalice_functions() - {"bearer"}
    assert "bearer" not in recording.calls


def test_a_function_is_refused_what_its_policy_does_not_name(recording: Recording) -> None:
    arns, policies = recording.arns, recording.policies
    table, queue_arn = arns.table, arns.queue
    refusals = {
        # The delivery worker sends notices: it has no business with the audit log or topics.
        "deliver_notices": [
            Request("dynamodb:PutItem", table(f"forewarn-{STAGE}-audit")),
            Request("dynamodb:Scan", table(f"forewarn-{STAGE}-customers")),
            Request("sqs:SendMessage", queue_arn(queue("planner"))),
        ],
        # The feedback worker reads and writes suppressions, never the customer records.
        "apply_feedback": [
            Request("dynamodb:GetItem", table(f"forewarn-{STAGE}-customers")),
            Request("dynamodb:DeleteItem", table(f"forewarn-{STAGE}-deliveries")),
            Request("sns:Publish", recording.resolve.values["OpsTopic"]),
        ],
        # The scan reads X and writes signals: no customers, no deliveries, no notices.
        "scan_social_feeds": [
            Request("dynamodb:Query", table(f"forewarn-{STAGE}-customers", "by-phone")),
            Request("dynamodb:PutItem", table(f"forewarn-{STAGE}-deliveries")),
            Request("sqs:SendMessage", queue_arn(queue("deliveries"))),
        ],
        # The planner reads the audience; it sends nothing itself and reads no secrets.
        "plan_broadcast": [
            Request("sns:Publish", "+14155550000"),
            Request("secretsmanager:GetSecretValue", recording.resolve.values["XCredentials"]),
        ],
        # The API may do much, but not delete a table or read another stage's.
        "api_handler": [
            Request("dynamodb:DeleteTable", table(f"forewarn-{STAGE}-customers")),
            Request("dynamodb:GetItem", table("forewarn-prod-customers")),
        ],
        # The authorizer touches nothing at all.
        "bearer": [Request("dynamodb:GetItem", table(f"forewarn-{STAGE}-customers"))],
    }
    allowed = [
        f"{function} may {request.action} on {request.resource}"
        for function, requests in refusals.items()
        for request in requests
        if is_allowed(policies[function], request)
    ]
    assert not allowed, "\n".join(allowed)


def test_dropping_a_statement_a_function_needs_makes_its_calls_refused(
    recording: Recording,
) -> None:
    # The evaluator is not a rubber stamp: without the statement naming the delivery ledger,
    # the worker's own recorded calls to it are refused.
    policy = recording.policies["deliver_notices"]
    ledger = recording.arns.table(f"forewarn-{STAGE}-deliveries")
    kept = [s for s in policy["Statement"] if ledger not in json.dumps(s)]
    assert len(kept) < len(policy["Statement"])
    trimmed = {**policy, "Statement": kept}
    calls = recording.calls["deliver_notices"]
    assert any(refused(call, trimmed, recording.arns) for call in calls)
    assert not any(refused(call, policy, recording.arns) for call in calls)


def test_no_policy_allows_every_resource_or_every_action_of_a_service() -> None:
    wide = []
    for name, path in function_policy_files().items():
        for statement in json.loads(path.read_text())["Statement"]:
            actions = statement.get("Action", [])
            for action in actions if isinstance(actions, list) else [actions]:
                if action == "*" or action.endswith(":*"):
                    wide.append(f"{name}: {action}")
            if statement.get("Resource") == "*" or "*" in (statement.get("Resource") or []):
                wide.append(f"{name}: {statement.get('Sid')} on every resource")
    assert not wide, wide


@pytest.mark.parametrize(
    ("statement", "request_", "allowed"),
    [
        (
            {"Effect": "Allow", "Action": "dynamodb:Get*", "Resource": "arn:t/a"},
            Request("dynamodb:GetItem", "arn:t/a"),
            True,
        ),
        (
            {"Effect": "Allow", "Action": "dynamodb:GetItem", "Resource": "arn:t/a"},
            Request("dynamodb:GetItem", "arn:t/ab"),
            False,
        ),
        (
            {"Effect": "Allow", "Action": "DynamoDB:getitem", "Resource": "arn:t/a/index/*"},
            Request("dynamodb:GetItem", "arn:t/a/index/by-x"),
            True,
        ),
        (
            {"Effect": "Allow", "Action": "sns:Publish", "NotResource": "arn:aws:sns:*:*:*"},
            Request("sns:Publish", "arn:aws:sns:us-east-1:1:topic"),
            False,
        ),
        (
            {"Effect": "Allow", "Action": "sns:Publish", "NotResource": "arn:aws:sns:*:*:*"},
            Request("sns:Publish", "+14155550100"),
            True,
        ),
        (
            {
                "Effect": "Allow",
                "Action": "kms:Decrypt",
                "Resource": "*",
                "Condition": {"StringEquals": {"kms:ViaService": "x"}},
            },
            Request("kms:Decrypt", "arn:k"),
            False,
        ),
    ],
)
def test_the_evaluator_reads_wildcards_case_and_not_resource_as_iam_does(
    statement: dict[str, Any], request_: Request, allowed: bool
) -> None:
    assert is_allowed({"Statement": [statement]}, request_) is allowed


def test_an_explicit_deny_wins_over_an_allow() -> None:
    policy = {
        "Statement": [
            {"Effect": "Allow", "Action": "sqs:*", "Resource": "*"},
            {"Effect": "Deny", "Action": "sqs:DeleteQueue", "Resource": "*"},
        ]
    }
    assert is_allowed(policy, Request("sqs:SendMessage", "arn:q"))
    assert not is_allowed(policy, Request("sqs:DeleteQueue", "arn:q"))
