"""infra/: what every table, queue, topic and secret is protected by, the alarms that tell ops,
and SES's feedback; and that the local stack makes the same from the same file."""

from __future__ import annotations

import dataclasses
import json
import urllib.request
from typing import Any

import pytest
from chalice.utils import to_cfn_resource_name
from conftest import Stack

import app as forewarn_app
from chalicelib import aws
from chalicelib.auth import Principal, issue_local_token, verify
from chalicelib.config import scan_rate_minutes, settings
from forewarn_cli.local import infra
from forewarn_cli.packaging import INFRA_DIR, merge_template

KEY = {"Fn::GetAtt": ["StackKey", "Arn"]}


def template() -> dict[str, Any]:
    return infra.load_template()


def of_type(kind: str, resources: dict[str, Any] | None = None) -> dict[str, Any]:
    found = resources if resources is not None else template()["Resources"]
    return {logical: r for logical, r in found.items() if r.get("Type") == kind}


def dead_letter_queues() -> set[str]:
    return {
        queue["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
        for queue in of_type("AWS::SQS::Queue").values()
        if "RedrivePolicy" in queue["Properties"]
    }


def function_logical_ids() -> set[str]:
    """The Lambda functions Chalice makes of app.py, as its template names them."""
    app = forewarn_app.app
    names = {"api_handler"} | {source.name for source in app.event_sources}
    names |= {config.name for config in app.builtin_auth_handlers}
    return {"APIHandler" if n == "api_handler" else to_cfn_resource_name(n) for n in names}


def test_every_table_has_point_in_time_recovery_and_the_stacks_kms_key() -> None:
    tables = of_type("AWS::DynamoDB::Table")
    assert len(tables) >= 18
    for logical, table in tables.items():
        props = table["Properties"]
        assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
        assert props["SSESpecification"] == {
            "SSEEnabled": True,
            "SSEType": "KMS",
            "KMSMasterKeyId": KEY,
        }, logical


def test_what_holds_data_survives_deletion_but_not_the_rollback_of_its_first_create() -> None:
    resources = template()["Resources"]
    stateful = {
        logical: resource
        for logical, resource in resources.items()
        if resource["Type"]
        in {
            "AWS::DynamoDB::Table",
            "AWS::KMS::Key",
            "AWS::Cognito::UserPool",
            "AWS::SecretsManager::Secret",
        }
    }
    assert len(of_type("AWS::DynamoDB::Table")) >= 18
    assert {"StackKey", "ConsoleUserPool", "XCredentials", "WebhookSecrets"} <= set(stateful)
    # The dev stage's token key is made by Secrets Manager and read by nothing but the stack:
    # a new stack makes a new one, and the tokens of a deleted stack should die with it.
    generated = stateful.pop("DevTokenKey")
    assert "GenerateSecretString" in generated["Properties"]
    assert "DeletionPolicy" not in generated
    for logical, resource in stateful.items():
        # A rollback of the create that made it deletes it, so a retry does not stop on its
        # name; after that, neither a rollback nor deleting the stack does.
        assert resource["DeletionPolicy"] == "RetainExceptOnCreate", logical
        # UpdateReplacePolicy has no such value: a replacement keeps the old resource.
        assert resource["UpdateReplacePolicy"] == "Retain", logical
    # Queues, topics and the rest go with the stack: nothing to keep, and a kept one would
    # block a new stack of the stage on its name.
    kept = {logical for logical, resource in resources.items() if "DeletionPolicy" in resource}
    assert kept == set(stateful)


def test_the_dev_stage_alone_gets_a_token_key_and_a_console_users_secret() -> None:
    data = template()
    assert data["Conditions"]["IsDevStage"] == {"Fn::Equals": [{"Ref": "Stage"}, "dev"]}
    conditional = {
        logical: resource["Properties"]["Name"]
        for logical, resource in data["Resources"].items()
        if resource.get("Condition") == "IsDevStage"
    }
    assert conditional == {
        "DevTokenKey": {"Fn::Sub": "forewarn/${Stage}/token-key"},
        "DevConsoleUsers": {"Fn::Sub": "forewarn/${Stage}/console-users"},
    }
    key = data["Resources"]["DevTokenKey"]["Properties"]
    assert key["GenerateSecretString"] == {"PasswordLength": 64, "ExcludePunctuation": True}
    for stage, made in (("dev", True), ("prod", False), ("staging", False)):
        params = {"Stage": stage, "SenderEmail": "a@b.example", "OpsEmail": ""}
        for resource in (data["Resources"][logical] for logical in conditional):
            assert infra.condition_holds(data, resource, params) is made, stage


def test_posts_and_the_delivery_ledger_expire_by_ttl() -> None:
    tables = template()["Resources"]
    for logical in ("PostsTable", "DeliveriesTable", "WebhookEventsTable"):
        ttl = tables[logical]["Properties"]["TimeToLiveSpecification"]
        assert ttl == {"AttributeName": "expires_at", "Enabled": True}, logical


def test_every_queue_and_dead_letter_queue_is_encrypted_at_rest() -> None:
    queues = of_type("AWS::SQS::Queue")
    assert len(queues) == 8
    for logical, queue in queues.items():
        props = queue["Properties"]
        assert props.get("SqsManagedSseEnabled") is True or "KmsMasterKeyId" in props, logical


def test_every_topic_and_secret_is_encrypted_with_the_stacks_key() -> None:
    topics = of_type("AWS::SNS::Topic")
    secrets = of_type("AWS::SecretsManager::Secret")
    assert {"OpsTopic", "ReturnsTopic", "InboundSmsTopic", "EmailFeedbackTopic"} <= set(topics)
    assert {"XCredentials", "WebhookSecrets", "DevTokenKey", "DevConsoleUsers"} == set(secrets)
    for logical, topic in topics.items():
        assert topic["Properties"]["KmsMasterKeyId"] == KEY, logical
    for logical, secret in secrets.items():
        assert secret["Properties"]["KmsKeyId"] == KEY, logical
        assert "never in code" in secret["Properties"]["Description"], logical


def test_the_stack_key_rotates_and_lets_ses_and_cloudwatch_publish_to_encrypted_topics() -> None:
    key = template()["Resources"]["StackKey"]
    assert key["Properties"]["EnableKeyRotation"] is True
    services: set[str] = set()
    for statement in key["Properties"]["KeyPolicy"]["Statement"]:
        principal = statement["Principal"].get("Service", [])
        services |= set(principal if isinstance(principal, list) else [principal])
        if principal:
            # Data keys for the topics only: no service may administer or re-encrypt.
            assert set(statement["Action"]) == {"kms:GenerateDataKey*", "kms:Decrypt"}
    assert {"ses.amazonaws.com", "cloudwatch.amazonaws.com"} <= services


def test_every_dead_letter_queue_has_a_depth_alarm_that_tells_ops() -> None:
    alarms = of_type("AWS::CloudWatch::Alarm")
    watched = {}
    for alarm in alarms.values():
        props = alarm["Properties"]
        if props["Namespace"] == "AWS/SQS":
            (dimension,) = props["Dimensions"]
            watched[dimension["Value"]["Fn::GetAtt"][0]] = props
    assert set(watched) == dead_letter_queues()
    assert len(watched) == 4
    for queue, props in watched.items():
        assert props["MetricName"] == "ApproximateNumberOfMessagesVisible", queue
        assert (props["ComparisonOperator"], props["Threshold"]) == ("GreaterThanThreshold", 0)
        assert props["AlarmActions"] == [{"Ref": "OpsTopic"}], queue


def test_every_function_has_error_and_throttle_alarms_that_tell_ops() -> None:
    resources = merge_template()["Resources"]
    seen: dict[str, set[str]] = {}
    for alarm in of_type("AWS::CloudWatch::Alarm", resources).values():
        props = alarm["Properties"]
        if props["Namespace"] != "AWS/Lambda" or props["MetricName"] not in {"Errors", "Throttles"}:
            continue
        (dimension,) = props["Dimensions"]
        assert dimension["Name"] == "FunctionName"
        seen.setdefault(dimension["Value"]["Ref"], set()).add(props["MetricName"])
        assert (props["ComparisonOperator"], props["Threshold"]) == ("GreaterThanThreshold", 0)
        assert props["AlarmActions"] == [{"Ref": "OpsTopic"}]
    assert set(seen) == function_logical_ids()
    assert all(metrics == {"Errors", "Throttles"} for metrics in seen.values()), seen


def test_an_alarm_fires_when_the_scan_has_not_run() -> None:
    props = merge_template()["Resources"]["ScanSocialFeedsNotRunningAlarm"]["Properties"]
    assert props["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": "ScanSocialFeeds"}}]
    assert (props["MetricName"], props["Statistic"]) == ("Invocations", "Sum")
    assert (props["ComparisonOperator"], props["Threshold"]) == ("LessThanThreshold", 1)
    # No data at all is the very case to catch: a disabled schedule reports nothing.
    assert props["TreatMissingData"] == "breaching"
    assert props["EvaluationPeriods"] == 2
    # A period shorter than the scan's rate would fire between two healthy runs.
    assert props["Period"] >= scan_rate_minutes() * 60
    assert props["AlarmActions"] == [{"Ref": "OpsTopic"}]


def test_ses_reports_bounces_and_complaints_to_the_feedback_topic() -> None:
    resources = template()["Resources"]
    identity = resources["SenderIdentity"]["Properties"]
    assert identity["ConfigurationSetAttributes"] == {
        "ConfigurationSetName": {"Ref": "EmailConfigurationSet"}
    }
    destination = resources["EmailFeedbackEventDestination"]["Properties"]
    assert destination["ConfigurationSetName"] == {"Ref": "EmailConfigurationSet"}
    events = destination["EventDestination"]
    # Deliveries too would be one feedback message per email sent, for nothing to act on.
    assert set(events["MatchingEventTypes"]) == {"bounce", "complaint"}
    assert events["SnsDestination"] == {"TopicARN": {"Ref": "EmailFeedbackTopic"}}
    # ... which the feedback queue takes from, and SES may publish to.
    subscription = resources["EmailFeedbackSubscription"]["Properties"]
    assert subscription["Endpoint"] == {"Fn::GetAtt": ["FeedbackQueue", "Arn"]}
    (allowed,) = resources["EmailFeedbackTopicPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert allowed["Principal"] == {"Service": "ses.amazonaws.com"}


def test_the_feedback_queue_takes_messages_from_the_two_feedback_topics_only() -> None:
    policy = template()["Resources"]["FeedbackQueuePolicy"]["Properties"]
    assert policy["Queues"] == [{"Ref": "FeedbackQueue"}]
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert statement["Action"] == "sqs:SendMessage"
    assert statement["Principal"] == {"Service": "sns.amazonaws.com"}
    assert statement["Condition"]["ArnEquals"]["aws:SourceArn"] == [
        {"Ref": "InboundSmsTopic"},
        {"Ref": "EmailFeedbackTopic"},
    ]


def test_every_suppressed_lint_finding_says_why() -> None:
    overlay = json.loads((INFRA_DIR / "chalice-overlay.json").read_text())
    skips = [
        (logical, skip)
        for resources in (template()["Resources"], overlay["Resources"])
        for logical, resource in resources.items()
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", [])
    ]
    assert skips
    for logical, skip in skips:
        assert skip["id"].startswith("CKV"), logical
        assert len(skip.get("comment", "")) > 40, (logical, skip["id"])


def test_the_local_stack_makes_the_alarms_configuration_set_and_encrypted_secrets(
    stack: Stack,
) -> None:
    alarms = aws.client("cloudwatch").describe_alarms()["MetricAlarms"]
    ops = "arn:aws:sns:us-east-1:123456789012:forewarn-test-ops"
    watched = {a["Dimensions"][0]["Value"]: a for a in alarms if a["Namespace"] == "AWS/SQS"}
    queues = ("planner", "deliveries", "notices", "feedback")
    assert set(watched) == {f"forewarn-test-{q}-dlq" for q in queues}
    assert all(alarm["AlarmActions"] == [ops] for alarm in watched.values())
    ses = aws.client("ses").describe_configuration_set(
        ConfigurationSetName="forewarn-test", ConfigurationSetAttributeNames=["eventDestinations"]
    )
    (destination,) = ses["EventDestinations"]
    assert destination["SNSDestination"]["TopicARN"].endswith(":forewarn-test-email-feedback")
    key = aws.client("kms").describe_key(KeyId="alias/forewarn-test")["KeyMetadata"]
    for name in ("forewarn/test/x", "forewarn/test/webhooks"):
        assert aws.client("secretsmanager").describe_secret(SecretId=name)["KmsKeyId"] in {
            key["Arn"],
            key["KeyId"],
        }
    sqs = aws.client("sqs")
    url = sqs.get_queue_url(QueueName="forewarn-test-feedback")["QueueUrl"]
    policy = json.loads(
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"])["Attributes"]["Policy"]
    )
    sources = policy["Statement"][0]["Condition"]["ArnEquals"]["aws:SourceArn"]
    assert sorted(s.rsplit(":", 1)[-1] for s in sources) == [
        "forewarn-test-email-feedback",
        "forewarn-test-inbound-sms",
    ]


def test_the_local_stack_makes_the_dev_stages_key_and_users_for_dev_only(stack: Stack) -> None:
    client = aws.client("secretsmanager")
    for name in ("forewarn/test/token-key", "forewarn/test/console-users"):
        with pytest.raises(client.exceptions.ResourceNotFoundException):
            client.describe_secret(SecretId=name)
    # A fresh embedded AWS for the dev stage: moto's SES names event destinations
    # account-wide, so the two stages' configuration sets cannot both have theirs.
    reset = urllib.request.Request(f"{stack.url}/moto-api/reset", method="POST")
    urllib.request.urlopen(reset).close()
    made = infra.deploy(aws.client, stage="dev", sender_email="alerts@forewarn.example")
    assert {"DevTokenKey", "DevConsoleUsers"} <= set(made)
    assert "OpsEmailSubscription" not in made
    key = client.get_secret_value(SecretId="forewarn/dev/token-key")["SecretString"]
    assert len(key) == 64
    assert key.isalnum()
    assert client.get_secret_value(SecretId="forewarn/dev/console-users")["SecretString"] == "{}"
    # What the dev stage's functions get as FOREWARN_TOKEN_SECRET checks the tokens signed
    # with the key read back from the secret, as its operators make them.
    dev = dataclasses.replace(settings(), auth_mode="local", token_secret=key)
    token = issue_local_token("dana", "ops", secret=key, issuer=dev.token_issuer)
    assert verify(f"Bearer {token}", dev) == Principal("dana", "ops")
