"""Input and output shapes of the egress API (docs/api.md, "Egress")."""

from __future__ import annotations

from rest_framework import serializers

from egress import policy
from weldr_agent.serializers import StrictSerializer

ENTRIES_HELP = (f"CIDRs, addresses or host names (resolved and pinned when set), at most "
                f"{policy.MAX_ENTRIES}.")


class EgressPolicyInputSerializer(StrictSerializer):
    mode = serializers.ChoiceField(choices=policy.MODES, default="internet")
    # Checked by the service, entry by entry, with a code per kind of mistake.
    allow = serializers.JSONField(default=list, help_text=ENTRIES_HELP)
    deny = serializers.JSONField(default=list, help_text=ENTRIES_HELP)


class EgressPolicySerializer(serializers.Serializer):
    bucket = serializers.CharField()
    source = serializers.ChoiceField(choices=("default", "bucket"),
                                     help_text="`default`: the settings' policy, none of its own.")
    mode = serializers.ChoiceField(choices=policy.MODES)
    allow = serializers.ListField(child=serializers.CharField())
    deny = serializers.ListField(child=serializers.CharField())
    pinned = serializers.DictField(child=serializers.ListField(child=serializers.CharField()),
                                   help_text="Each host name's addresses, as resolved when set.")
    operator_deny = serializers.ListField(child=serializers.CharField(),
                                          help_text="SANDBOX_EGRESS_DENY: denied for every bucket.")
    updated_at = serializers.DateTimeField(allow_null=True)
