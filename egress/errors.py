"""The egress API's typed errors (docs/api.md, "Egress")."""

from __future__ import annotations

from weldr_agent.errors import APIError


class InvalidEgress(APIError):
    """A bad mode, CIDR or host name, too many entries, or an entry that is never allowed.

    `code`: invalid_egress, invalid_cidr, invalid_host, unresolvable_host, too_many_entries,
    egress_forbidden.
    """

    default_code = "invalid_egress"
    default_detail = "The egress policy is not valid."
