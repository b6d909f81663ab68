"""Policy rules in code, registered into Nova's enforcer by the API filter
and listed for ``oslopolicy-sample-generator`` through the
``oslo.policy.policies`` entry point (namespace ``nova_live_snapshot``)."""

from nova.policies import base
from oslo_policy import policy

__all__ = ['CREATE', 'list_rules', 'register']

CREATE = 'live_snapshot:servers:create_live_image'

RULES = [
    policy.DocumentedRuleDefault(
        name=CREATE,
        check_str=base.PROJECT_MEMBER_OR_ADMIN,
        description="""Capture a running server, memory and disk, into a live
image that new servers resume from instead of booting. Experimental: the
action only exists when ``[live_snapshot] enabled = true`` (default false);
with the default, this rule is never checked. A live image holds the
server's memory, secrets included: anyone who may boot it gets a copy.""",
        operations=[{'method': 'POST',
                     'path': '/servers/{server_id}/action (createLiveImage)'}],
        scope_types=['project']),
]


def list_rules():
    return RULES


def register(enforcer):
    """Register the rules into ``enforcer`` (Nova's) once."""
    missing = [rule for rule in RULES
               if rule.name not in enforcer.registered_rules]
    if missing:
        enforcer.register_defaults(missing)
