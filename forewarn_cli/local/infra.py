"""Create the resources of `infra/` on the local AWS API server, from the same template.

moto's CloudFormation creates most resource types itself; the few it does not know are
provisioned here through the API calls that CloudFormation would make.
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
    response = clients("secretsmanager").create_secret(
        Name=_resolve(props["Name"], params),
        Description=props.get("Description", ""),
        SecretString=props.get("SecretString", "{}"),
    )
    return str(response["ARN"])


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


# Resource types moto's CloudFormation skips, and how to create each one directly.
_DIRECT: dict[str, Creator] = {
    "AWS::SES::EmailIdentity": _ses_identity,
    "AWS::SecretsManager::Secret": _secret,
    "AWS::SNS::Subscription": _sns_subscription,
    "AWS::Cognito::UserPool": _user_pool,
    "AWS::Cognito::UserPoolClient": _user_pool_client,
    "AWS::Cognito::UserPoolGroup": _user_pool_group,
}


def _resolve(value: Any, params: Mapping[str, str]) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Ref" in value:
        return params[value["Ref"]]
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        # Only what the direct resources ask for: a queue's ARN (its physical id is its URL).
        logical, attribute = value["Fn::GetAtt"]
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


def deploy(
    clients: Callable[[str], Any], *, stage: str, sender_email: str, ops_email: str = ""
) -> list[str]:
    """Create every resource of the template; returns the logical ids created."""
    template = load_template()
    params = {"Stage": stage, "SenderEmail": sender_email, "OpsEmail": ops_email}
    direct = {
        logical: resource
        for logical, resource in template["Resources"].items()
        if resource["Type"] in _DIRECT
    }
    stack_template = dict(template)
    stack_template["Resources"] = {
        k: v for k, v in template["Resources"].items() if k not in direct
    }
    stack_template["Outputs"] = {
        k: v for k, v in template.get("Outputs", {}).items() if not _mentions(v, set(direct))
    }
    cloudformation = clients("cloudformation")
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
    # In template order, which puts what is referenced (a user pool) before its users.
    for logical, resource in direct.items():
        created = _DIRECT[resource["Type"]](
            clients, resource.get("Properties", {}), {**physical, **params}
        )
        if created is not None:
            physical[logical] = created
        log.info("created %s (%s) directly", logical, resource["Type"])
    return list(template["Resources"])


def _mentions(value: Any, logical_ids: set[str]) -> bool:
    text = json.dumps(value)
    return any(f'"{logical}"' in text for logical in logical_ids)
