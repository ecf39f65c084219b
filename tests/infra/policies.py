"""Reading IAM out of a synthesized template: every statement of every policy, and what
least privilege refuses in them."""

from __future__ import annotations

from collections.abc import Iterator
from fnmatch import fnmatchcase
from typing import Any

from aws_cdk.assertions import Template

# The only actions that may name Resource "*": IAM offers them no resource type.
STAR_RESOURCE_ACTIONS = frozenset({"ses:GetAccount", "ecr:GetAuthorizationToken"})
SEND_ACTIONS = frozenset({"ses:SendEmail", "ses:SendRawEmail"})


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def statements(template: Template) -> Iterator[tuple[str, dict[str, Any]]]:
    """(policy logical id, statement) for every identity policy of the template."""
    for logical_id, policy in template.find_resources("AWS::IAM::Policy").items():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            yield logical_id, statement


def least_privilege_breaches(template: Template) -> list[str]:
    """What a reviewer would refuse: a wildcard action, a "*" resource beyond the actions
    that need it, a send permission without the ses:FromAddress condition."""
    breaches = []
    for policy, statement in statements(template):
        actions = _listed(statement["Action"])
        resources = _listed(statement["Resource"])
        if statement.get("Effect") != "Allow":
            continue
        for action in actions:
            if "*" in action:
                breaches.append(f"{policy}: wildcard action {action}")
        if "*" in resources and not set(actions) <= STAR_RESOURCE_ACTIONS:
            breaches.append(f"{policy}: Resource * for {sorted(actions)}")
        # "ses:*", "ses:Send*" and "*" grant a send as much as "ses:SendEmail" does.
        if any(fnmatchcase(send, action) for send in SEND_ACTIONS for action in actions):
            condition = statement.get("Condition", {}).get("StringEquals", {})
            if not condition.get("ses:FromAddress"):
                breaches.append(f"{policy}: {sorted(actions)} without ses:FromAddress")
    return breaches
