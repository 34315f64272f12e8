"""The [findings] table resolved against the rule table (inventory.rules): each rule's options
checked against its parameters, each suppression against the rule ids and the calendar.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, timedelta
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field, ValidationError, create_model

from ..durations import parse_duration
from ..errors import ConfigError
from ..rules import RULES_BY_ID, FindingsSettings, Param, RuleSettings, Suppression
from .schema import FindingsConfig, Strict, describe

Severity = Literal["low", "medium", "high", "critical"]
MAX_SUPPRESSION_DAYS = 365


def resolve_findings(where: str, config: FindingsConfig, on: date) -> FindingsSettings:
    """[findings]: each rule's options checked against its parameters, each suppression
    against the rule table and the calendar."""

    known = ", ".join(RULES_BY_ID)
    rules = {}
    for rule_id, options in config.rules.items():
        key = f"findings.rules.{rule_id}"
        rule = RULES_BY_ID.get(rule_id)
        if rule is None:
            raise ConfigError(f"{where}: {key}: unknown rule {rule_id!r} (known: {known})")
        try:
            checked = _rule_options(rule_id, rule.params).model_validate(options)
        except ValidationError as exc:
            raise ConfigError(describe(where, exc, ("findings", "rules", rule_id))) from None
        values = {k: getattr(checked, k) for k in checked.model_fields_set}
        rules[rule_id] = RuleSettings(
            enabled=values.pop("enabled", None),
            severity=values.pop("severity", None),
            params=values,
        )
    suppress = []
    latest = on + timedelta(days=MAX_SUPPRESSION_DAYS)
    for i, entry in enumerate(config.suppress):
        key = f"findings.suppress[{i}]"
        if entry.rule not in RULES_BY_ID:
            raise ConfigError(f"{where}: {key}.rule: unknown rule {entry.rule!r} (known: {known})")
        if entry.until < on:
            raise ConfigError(
                f"{where}: {key}.until: {entry.until} is in the past, so this suppression has "
                f"ended: remove it, or renew it with a reason and a date at most "
                f"{MAX_SUPPRESSION_DAYS} days ahead"
            )
        if entry.until > latest:
            raise ConfigError(
                f"{where}: {key}.until: {entry.until} is more than {MAX_SUPPRESSION_DAYS} days "
                f"ahead (at most {latest}); a suppression must be reviewed at least once a year"
            )
        suppress.append(
            Suppression(
                index=i,
                rule=entry.rule,
                reason=entry.reason,
                until=entry.until,
                account=entry.account,
                integration=entry.integration,
                type=entry.type,
                name=entry.name,
            )
        )
    return FindingsSettings(config.fail_on, rules, tuple(suppress))


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    return value


def parse_rule_duration(value: str) -> timedelta:
    """30d, 12h or 90m (a rule parameter)."""
    return parse_duration(value, "2d, 48h or 90m")


def _duration(value: str) -> timedelta:
    delta = parse_rule_duration(value)
    if delta <= timedelta(0):
        raise ValueError("must be longer than 0")
    return delta


# What a rule parameter of each kind (rules.Param.kind) accepts in the TOML file.
_PARAM_TYPES: Mapping[str, Any] = {
    "days": Annotated[int, Field(ge=1, le=36500)],
    "regex": Annotated[str, AfterValidator(_regex)],
    "duration": Annotated[str, AfterValidator(_duration)],
}


def _rule_options(rule_id: str, params: tuple[Param, ...]) -> type[BaseModel]:
    """The schema of [findings.rules.<rule_id>]: enabled, severity and the rule's own
    parameters; any other key is unknown."""
    fields: dict[str, Any] = {
        "enabled": (bool, True),
        "severity": (Severity, "medium"),
    }
    for p in params:
        fields[p.name] = (_PARAM_TYPES[p.kind], p.default)
    return create_model(f"Rule{rule_id}", __base__=Strict, **fields)
