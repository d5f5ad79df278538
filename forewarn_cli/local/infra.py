"""Create the resources of `infra/` on the local AWS API server, from the same template.

moto's CloudFormation creates most resource types itself; the few it does not know are
provisioned here through the API calls that CloudFormation would make. What moto cannot hold
at all is left out and said so where it is skipped.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

INFRA_DIR = Path(__file__).resolve().parents[2] / "infra"
STACK_NAME = "forewarn"


def load_template(path: Path | None = None) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((path or INFRA_DIR / "forewarn.json").read_text())
    return data


# Each direct creator returns the physical id a later resource's `Ref` resolves to.
Creator = Callable[[Callable[[str], Any], Mapping[str, Any], Mapping[str, str]], str | None]


def _ses_identity(
    clients: Callable[[str], Any], props: Mapping[str, Any], params: Mapping[str, str]
) -> str | None:
    identity = _resolve(props["EmailIdentity"], params)
    clients("ses").verify_email_identity(EmailAddress=identity)
    return identity


def _secret(
    clients: Callable[[str], Any], props: Mapping[str, Any], params: Mapping[str, str]
) -> str | None:
    options = {"KmsKeyId": _resolve(props["KmsKeyId"], params)} if "KmsKeyId" in props else {}
    value = props.get("SecretString", "{}")
    if "GenerateSecretString" in props:
        value = _generated_secret(clients, props["GenerateSecretString"])
    response = clients("secretsmanager").create_secret(
        Name=_resolve(props["Name"], params),
        Description=props.get("Description", ""),
        SecretString=value,
        **options,
    )
    return str(response["ARN"])


def _generated_secret(clients: Callable[[str], Any], generate: Mapping[str, Any]) -> str:
    """What CloudFormation stores for `GenerateSecretString`: a password from Secrets Manager
    with the same options, alone or put under `GenerateStringKey` in `SecretStringTemplate`."""
    layout = {"SecretStringTemplate", "GenerateStringKey"}
    options = {key: value for key, value in generate.items() if key not in layout}
    password = str(clients("secretsmanager").get_random_password(**options)["RandomPassword"])
    if "SecretStringTemplate" not in generate:
        return password
    document = json.loads(generate["SecretStringTemplate"])
    document[generate["GenerateStringKey"]] = password
    return json.dumps(document)


def _sns_subscription(
    clients: Callable[[str], Any], props: Mapping[str, Any], params: Mapping[str, str]
) -> str | None:
    endpoint = _resolve(props["Endpoint"], params)
    if not endpoint:  # the template's condition: no address, no subscription
        return None
    response = clients("sns").subscribe(
        TopicArn=_resolve(props["TopicArn"], params),
        Protocol=_resolve(props["Protocol"], params),
        Endpoint=endpoint,
    )
    return str(response["SubscriptionArn"])


def _user_pool(
    clients: Callable[[str], Any], props: Mapping[str, Any], params: Mapping[str, str]
) -> str | None:
    response = clients("cognito-idp").create_user_pool(
        PoolName=_resolve(props["UserPoolName"], params),
        Policies=props.get("Policies", {}),
        AdminCreateUserConfig=props.get("AdminCreateUserConfig", {}),
        UsernameConfiguration=props.get("UsernameConfiguration", {}),
        MfaConfiguration=props.get("MfaConfiguration", "OFF"),
    )
    return str(response["UserPool"]["Id"])


def _user_pool_client(
    clients: Callable[[str], Any], props: Mapping[str, Any], params: Mapping[str, str]
) -> str | None:
    response = clients("cognito-idp").create_user_pool_client(
        UserPoolId=_resolve(props["UserPoolId"], params),
        ClientName=_resolve(props["ClientName"], params),
        GenerateSecret=bool(props.get("GenerateSecret", False)),
        ExplicitAuthFlows=props.get("ExplicitAuthFlows", []),
        PreventUserExistenceErrors=props.get("PreventUserExistenceErrors", "ENABLED"),
    )
    return str(response["UserPoolClient"]["ClientId"])


def _user_pool_group(
    clients: Callable[[str], Any], props: Mapping[str, Any], params: Mapping[str, str]
) -> str | None:
    clients("cognito-idp").create_group(
        GroupName=props["GroupName"],
        UserPoolId=_resolve(props["UserPoolId"], params),
        Description=props.get("Description", ""),
    )
    return str(props["GroupName"])


def _queue_policy(
    clients: Callable[[str], Any], props: Mapping[str, Any], params: Mapping[str, str]
) -> str | None:
    policy = json.dumps(_resolve_all(props["PolicyDocument"], params))
    for queue in props["Queues"]:
        clients("sqs").set_queue_attributes(
            QueueUrl=_resolve(queue, params), Attributes={"Policy": policy}
        )
    return None


def _topic_policy(
    clients: Callable[[str], Any], props: Mapping[str, Any], params: Mapping[str, str]
) -> str | None:
    policy = json.dumps(_resolve_all(props["PolicyDocument"], params))
    for topic in props["Topics"]:
        clients("sns").set_topic_attributes(
            TopicArn=_resolve(topic, params), AttributeName="Policy", AttributeValue=policy
        )
    return None


def _alarm(
    clients: Callable[[str], Any], props: Mapping[str, Any], params: Mapping[str, str]
) -> str | None:
    # Nothing raises these locally (moto computes no SQS or Lambda metrics); they are made so
    # that the local stack has what AWS has, and so that their references are checked.
    resolved = _resolve_all(props, params)
    name = str(resolved["AlarmName"])
    clients("cloudwatch").put_metric_alarm(**resolved)
    return name


def _configuration_set(
    clients: Callable[[str], Any], props: Mapping[str, Any], params: Mapping[str, str]
) -> str | None:
    # moto's SES keeps a configuration set's name only: its delivery, reputation and sending
    # options are AWS's business.
    name = _resolve(props["Name"], params)
    clients("ses").create_configuration_set(ConfigurationSet={"Name": name})
    return name


def _event_destination(
    clients: Callable[[str], Any], props: Mapping[str, Any], params: Mapping[str, str]
) -> str | None:
    destination = _resolve_all(props["EventDestination"], params)
    # CloudFormation spells it SnsDestination; the SES API, SNSDestination.
    if "SnsDestination" in destination:
        destination["SNSDestination"] = destination.pop("SnsDestination")
    clients("ses").create_configuration_set_event_destination(
        ConfigurationSetName=_resolve(props["ConfigurationSetName"], params),
        EventDestination=destination,
    )
    return str(destination["Name"])


# Resource types moto's CloudFormation skips, and how to create each one directly. The sender
# identity's default configuration set (ConfigurationSetAttributes) has no counterpart in
# moto's SES, whose events never reach SNS anyway; it is left out locally.
_DIRECT: dict[str, Creator] = {
    "AWS::SES::EmailIdentity": _ses_identity,
    "AWS::SecretsManager::Secret": _secret,
    "AWS::SNS::Subscription": _sns_subscription,
    "AWS::Cognito::UserPool": _user_pool,
    "AWS::Cognito::UserPoolClient": _user_pool_client,
    "AWS::Cognito::UserPoolGroup": _user_pool_group,
    "AWS::SQS::QueuePolicy": _queue_policy,
    "AWS::SNS::TopicPolicy": _topic_policy,
    "AWS::CloudWatch::Alarm": _alarm,
    "AWS::SES::ConfigurationSet": _configuration_set,
    "AWS::SES::ConfigurationSetEventDestination": _event_destination,
}


def _resolve(value: Any, params: Mapping[str, str]) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Ref" in value:
        return params[value["Ref"]]
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        logical, attribute = value["Fn::GetAtt"]
        if f"{logical}.{attribute}" in params:  # looked up once the stack was made
            return params[f"{logical}.{attribute}"]
        # Only what the direct resources ask for: a queue's ARN (its physical id is its URL).
        url = urlsplit(params[logical])
        host = url.hostname or ""
        if attribute == "Arn" and host.startswith("sqs."):
            account, name = url.path.strip("/").split("/")
            return f"arn:aws:sqs:{host.split('.')[1]}:{account}:{name}"
    if isinstance(value, dict) and "Fn::Sub" in value and isinstance(value["Fn::Sub"], str):
        text: str = value["Fn::Sub"]
        for key, val in params.items():
            text = text.replace("${" + key + "}", val)
        return text
    raise ValueError(f"cannot resolve {value!r} outside CloudFormation")


def condition_holds(
    template: Mapping[str, Any], resource: Mapping[str, Any], params: Mapping[str, str]
) -> bool:
    """Whether CloudFormation would make `resource` for these parameters: its `Condition`,
    if it has one, evaluated from the template's `Conditions`."""
    name = resource.get("Condition")
    return name is None or _condition(template.get("Conditions", {}), name, params)


def _condition(conditions: Mapping[str, Any], name: str, params: Mapping[str, str]) -> bool:
    def holds(value: Any) -> bool:
        ((function, argument),) = value.items()
        if function == "Condition":
            return _condition(conditions, argument, params)
        if function == "Fn::Equals":
            left, right = (_resolve(item, params) for item in argument)
            return left == right
        if function == "Fn::Not":
            return not holds(argument[0])
        if function == "Fn::And":
            return all(holds(item) for item in argument)
        if function == "Fn::Or":
            return any(holds(item) for item in argument)
        raise ValueError(f"cannot evaluate condition {name}: {function}")

    return holds(conditions[name])


def _resolve_all(value: Any, params: Mapping[str, str]) -> Any:
    """A structure with every intrinsic function inside it resolved (a policy, an alarm)."""
    if isinstance(value, dict):
        if len(value) == 1 and next(iter(value)) in {"Ref", "Fn::GetAtt", "Fn::Sub"}:
            return _resolve(value, params)
        return {key: _resolve_all(item, params) for key, item in value.items()}
    if isinstance(value, list):
        return [_resolve_all(item, params) for item in value]
    return value


def _attributes(
    clients: Callable[[str], Any], template: Mapping[str, Any], physical: Mapping[str, str]
) -> dict[str, str]:
    """The `Fn::GetAtt` values of what the stack made that directly made resources ask for."""
    found: dict[str, str] = {}
    for logical, resource in template["Resources"].items():
        if logical not in physical:
            continue
        if resource["Type"] == "AWS::KMS::Key":
            metadata = clients("kms").describe_key(KeyId=physical[logical])["KeyMetadata"]
            found[f"{logical}.Arn"] = str(metadata["Arn"])
        elif resource["Type"] == "AWS::SQS::Queue":
            found[f"{logical}.QueueName"] = physical[logical].rstrip("/").rsplit("/", 1)[-1]
    return found


def deploy(
    clients: Callable[[str], Any], *, stage: str, sender_email: str, ops_email: str = ""
) -> list[str]:
    """Create every resource of the template whose condition holds for `stage`; returns the
    logical ids created."""
    template = load_template()
    params = {"Stage": stage, "SenderEmail": sender_email, "OpsEmail": ops_email}
    direct = {
        logical: resource
        for logical, resource in template["Resources"].items()
        if resource["Type"] in _DIRECT
    }
    # moto's CloudFormation weighs the conditions of what it makes; these are made here.
    skipped = {
        logical
        for logical, resource in direct.items()
        if not condition_holds(template, resource, params)
    }
    cloudformation = clients("cloudformation")
    pseudo = {
        "AWS::AccountId": str(clients("sts").get_caller_identity()["Account"]),
        "AWS::Region": str(cloudformation.meta.region_name),
        "AWS::Partition": "aws",
        "AWS::StackName": f"{STACK_NAME}-{stage}",
    }
    stack_template = dict(template)
    stack_template["Resources"] = {
        k: _for_moto(v, {**pseudo, **params})
        for k, v in template["Resources"].items()
        if k not in direct
    }
    stack_template["Outputs"] = {
        k: v for k, v in template.get("Outputs", {}).items() if not _mentions(v, set(direct))
    }
    cloudformation.create_stack(
        StackName=f"{STACK_NAME}-{stage}",
        TemplateBody=json.dumps(stack_template),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()],
    )
    status = cloudformation.describe_stacks(StackName=f"{STACK_NAME}-{stage}")["Stacks"][0][
        "StackStatus"
    ]
    if status != "CREATE_COMPLETE":
        raise RuntimeError(f"local stack ended in {status}")
    # A directly created resource may Ref one the stack made: resolve it to its physical id.
    physical = {
        r["LogicalResourceId"]: r["PhysicalResourceId"]
        for r in cloudformation.describe_stack_resources(StackName=f"{STACK_NAME}-{stage}")[
            "StackResources"
        ]
    }
    physical.update(_attributes(clients, template, physical))
    physical.update(pseudo)
    # In template order, which puts what is referenced (a user pool) before its users.
    for logical, resource in direct.items():
        if logical in skipped:
            continue
        created = _DIRECT[resource["Type"]](
            clients, resource.get("Properties", {}), {**physical, **params}
        )
        if created is not None:
            physical[logical] = created
        log.info("created %s (%s) directly", logical, resource["Type"])
    return [
        logical
        for logical, resource in template["Resources"].items()
        if condition_holds(template, resource, params)
    ]


def _for_moto(resource: dict[str, Any], params: Mapping[str, str]) -> dict[str, Any]:
    """moto's CloudFormation keeps a key policy as given, but its KMS reads it as JSON text."""
    if resource["Type"] != "AWS::KMS::Key" or "KeyPolicy" not in resource["Properties"]:
        return resource
    policy = json.dumps(_resolve_all(resource["Properties"]["KeyPolicy"], params))
    return {**resource, "Properties": {**resource["Properties"], "KeyPolicy": policy}}


def _mentions(value: Any, logical_ids: set[str]) -> bool:
    text = json.dumps(value)
    return any(f'"{logical}"' in text for logical in logical_ids)
