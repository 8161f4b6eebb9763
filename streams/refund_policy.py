"""The refund approval policy: which approvals a refund request needs before it posts.

Data, not code (``refund_policy.yaml``, versioned like the chart of accounts): per entity
with a default, an ordered list of rules by amount. The pure core files every refund request
under the rule its amount and entity pick and keeps that rule on the request, so a policy
changed later never changes a request already filed, and a replayed event decides the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from rcmflow.streams.data_files import load_data_file
from rcmflow.streams.exceptions import RefundPolicyError
from rcmflow.streams.money import AMOUNT_CENTS_MAX

__all__ = ["ApprovalRule", "EntityPolicy", "RefundPolicy", "load_refund_policy",
           "DEFAULT_REFUND_POLICY", "APPROVALS_MAX"]

DEFAULT_REFUND_POLICY = "refund_policy.yaml"
#: A policy file is a few KB; anything near this is a wrong file.
POLICY_BYTES_MAX = 1_000_000
#: Most approvals one rule may ask for (four eyes, six at most).
APPROVALS_MAX = 3

RoleName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,39}$")]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ApprovalRule(_Frozen):
    """Refunds up to ``up_to_cents`` (None: any amount) need ``approvals`` approvals by
    distinct users acting in one of ``roles``; 0 approvals: the policy approves them."""

    name: str = Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_.\-]+$")
    up_to_cents: int | None = Field(None, ge=0, le=AMOUNT_CENTS_MAX)
    approvals: int = Field(ge=0, le=APPROVALS_MAX)
    roles: tuple[RoleName, ...] = ()

    @model_validator(mode="after")
    def _roles_when_approved_by_people(self) -> ApprovalRule:
        if self.approvals and not self.roles:
            raise ValueError(f"rule {self.name!r} needs approvals but names no roles")
        if not self.approvals and self.roles:
            raise ValueError(f"rule {self.name!r} is automatic (0 approvals) yet names roles")
        return self

    def describe(self) -> str:
        bound = "any amount" if self.up_to_cents is None else f"up to {self.up_to_cents} cents"
        if not self.approvals:
            return f"{self.name}: {bound}, approved by the policy"
        who = " or ".join(self.roles)
        return f"{self.name}: {bound}, {self.approvals} approval(s) by {who}"


class EntityPolicy(_Frozen):
    sla_hours: int = Field(72, ge=1, le=24 * 365)
    rules: tuple[ApprovalRule, ...] = Field(min_length=1, max_length=20)
    #: Roles whose approval lets a refund post past the account's credit balance; empty:
    #: such a refund is refused.
    over_credit_roles: tuple[RoleName, ...] = ()

    @model_validator(mode="after")
    def _ordered_and_total(self) -> EntityPolicy:
        bounds = [rule.up_to_cents for rule in self.rules]
        if bounds[-1] is not None:
            raise ValueError("the last rule must cover any amount (no up_to_cents)")
        if None in bounds[:-1]:
            raise ValueError("only the last rule may leave up_to_cents out")
        known = [b for b in bounds[:-1] if b is not None]
        if known != sorted(set(known)):
            raise ValueError("rules must be ordered by up_to_cents, each higher than the last")
        names = [rule.name for rule in self.rules]
        if len(set(names)) != len(names):
            raise ValueError("rule names must be unique within an entity")
        return self

    def rule_for(self, amount_cents: int) -> ApprovalRule:
        return next(rule for rule in self.rules
                    if rule.up_to_cents is None or amount_cents <= rule.up_to_cents)


class RefundPolicy(_Frozen):
    version: str = Field(min_length=1, max_length=40)
    default: EntityPolicy
    entities: dict[str, EntityPolicy] = Field(default_factory=dict)

    def for_entity(self, entity: str) -> EntityPolicy:
        return self.entities.get(entity, self.default)

    def roles(self) -> frozenset[str]:
        """Every role the policy names: the roles a user may be granted for refunds."""
        policies = [self.default, *self.entities.values()]
        return frozenset(role for policy in policies
                         for role in (*policy.over_credit_roles,
                                      *(r for rule in policy.rules for r in rule.roles)))



def load_refund_policy(path: Path | None = None) -> RefundPolicy:
    """Load and check a policy file; ``None`` loads the one shipped with rcmflow."""
    return load_data_file(RefundPolicy, path, shipped=DEFAULT_REFUND_POLICY,
                          what="refund policy", error=RefundPolicyError,
                          bytes_max=POLICY_BYTES_MAX)
