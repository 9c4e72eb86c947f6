"""The sandbox: previews, commands, egress, and the limits against cheap denial of service.
"""

from __future__ import annotations

import re

from django.core.exceptions import ImproperlyConfigured

from weldr_agent.settings.core import PRODUCTION, WELDR_ENV_VOL
from weldr_agent.settings.parse import boolean, choice, env, integer, number

# ---------------------------------------------------------------------------------------------
# Previews and commands (the sandbox)
# ---------------------------------------------------------------------------------------------

PREVIEW_PORT_MIN = 3000
PREVIEW_PORT_MAX = 3019
OCI_RUNTIME = choice("OCI_RUNTIME", env.str("OCI_RUNTIME", default="auto"),
                      ("auto", "crun", "runc"))
SANDBOX_MEMORY_MB = integer("SANDBOX_MEMORY_MB", 512, low=16, high=1024**2)
SANDBOX_CPUS = number("SANDBOX_CPUS", 1.0, low=0.05, high=256)
SANDBOX_PIDS = integer("SANDBOX_PIDS", 512, low=8, high=10**6)
SANDBOX_UID = integer("SANDBOX_UID", 1000, low=1, high=2**31)
SANDBOX_OUTBOUND = boolean("SANDBOX_OUTBOUND", default=PRODUCTION)
# Egress (egress/policy.py, docs/security.md "Network"): the policy of a bucket that has none of
# its own; the deny-list applies to every bucket, on top of its own.
SANDBOX_EGRESS_MODE = choice("SANDBOX_EGRESS_MODE", env.str("SANDBOX_EGRESS_MODE",
                              default="internet"), ("internet", "allowlist", "none"))


def _cidrs(name: str) -> list[str]:
    import ipaddress

    values = [v.strip() for v in env.list(name, default=[]) if v.strip()]
    for value in values:
        try:
            ipaddress.ip_network(value, strict=True)
        except ValueError as error:
            raise ImproperlyConfigured(f"{name}: {value!r} is not a CIDR: {error}.") from error
    if len(values) > 100:
        raise ImproperlyConfigured(f"{name} holds {len(values)} CIDRs; at most 100.")
    return values


SANDBOX_EGRESS_ALLOW = _cidrs("SANDBOX_EGRESS_ALLOW")
SANDBOX_EGRESS_DENY = _cidrs("SANDBOX_EGRESS_DENY")
PREVIEW_STOP_GRACE_SECONDS = integer("PREVIEW_STOP_GRACE_SECONDS", 5, low=0, high=600)
PREVIEW_READY_TIMEOUT_SECONDS = integer("PREVIEW_READY_TIMEOUT_SECONDS", 120, low=1, high=3600)
# Previews are served by the agent's proxy on this address (every host address by default).
PREVIEW_BIND_ADDRESS = env.str("PREVIEW_BIND_ADDRESS", default="0.0.0.0")
PREVIEW_LOG_MAX_BYTES = integer("PREVIEW_LOG_MAX_BYTES", 10 * 1024 * 1024, low=4096, high=1024**3)
# Private previews (previews/tokens.py, docs/previews.md "Access"): a preview started without
# `access` is `token` (the proxy answers 401 without a preview access token) in production and
# `public` elsewhere, so that local development and tests open previews without minting tokens.
PREVIEW_ACCESS = choice("PREVIEW_ACCESS", env.str(
    "PREVIEW_ACCESS", default="token" if PRODUCTION else "public"), ("public", "token"))
# The HMAC key of preview access tokens; empty derives one from SECRET_KEY (set it to rotate the
# tokens without touching Django's key, or to share it between machines behind one domain).
PREVIEW_TOKEN_SECRET = env.str("PREVIEW_TOKEN_SECRET", default="")
# Lifetime of a token minted without `ttl_seconds`, and the longest a caller may ask for.
PREVIEW_TOKEN_TTL_SECONDS = integer("PREVIEW_TOKEN_TTL_SECONDS", 3600, low=10, high=30 * 86400)
PREVIEW_TOKEN_MAX_TTL_SECONDS = integer("PREVIEW_TOKEN_MAX_TTL_SECONDS", 7 * 86400, low=10,
                                     high=365 * 86400)
# One-shot tokens already used, one empty file each until the token expires: a used link stays
# used across an agent restart.
PREVIEW_TOKENS_USED_DIR = WELDR_ENV_VOL / "preview-tokens-used"
# Serve each preview on its own host name, `{bucket}-{port}.{PREVIEW_DOMAIN}` (wildcard DNS and
# certificate: docs/previews.md), so that browsers give every preview its own origin and cookie
# jar, apart from the agent's. Empty: previews are served on the agent's host name, one port each.
PREVIEW_DOMAIN = env.str("PREVIEW_DOMAIN", default="").strip().strip(".").lower()
if PREVIEW_DOMAIN and not re.match(r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$",
                                   PREVIEW_DOMAIN):
    raise ImproperlyConfigured(f"PREVIEW_DOMAIN must be a DNS name; got {PREVIEW_DOMAIN!r}.")
# Preview containers started ahead of time (sandbox/warm.py); 0 starts every preview cold. Each
# is a shell waiting on a fifo in its own netns: 20 together ~3.5 MB of PSS, ~5.5 MB of cgroup
# charge (docs/previews.md), so that twenty previews at once start warm from rest.
PREVIEW_WARM_POOL = integer("PREVIEW_WARM_POOL", 20, low=0, high=20)
# After a burst of starts (several within 10 s) the warm pool grows to the burst's size, at most
# this many, so that the next burst starts warm too; PREVIEW_WARM_POOL_BURST_SECONDS after the
# last such burst it shrinks back to PREVIEW_WARM_POOL. At most PREVIEW_WARM_POOL: no growth.
PREVIEW_WARM_POOL_BURST = integer("PREVIEW_WARM_POOL_BURST", 20, low=0, high=20)
PREVIEW_WARM_POOL_BURST_SECONDS = integer("PREVIEW_WARM_POOL_BURST_SECONDS", 120, low=1,
                                          high=86400)
EXEC_MAX_CONCURRENT = integer("EXEC_MAX_CONCURRENT", 8, low=1, high=1000)
EXEC_OUTPUT_MAX_BYTES = integer("EXEC_OUTPUT_MAX_BYTES", 1024 * 1024, low=1024, high=1024**3)

# ---------------------------------------------------------------------------------------------
# Limits against cheap denial of service (weldr_agent/limits.py, docs/security.md "Limits")
# ---------------------------------------------------------------------------------------------

# Open connections the preview proxy serves on one preview port, and from one client address
# across all ports; beyond either, a new connection is answered 429 and closed before its
# request is read. Connections held while the app starts count too.
PREVIEW_MAX_CONNECTIONS_PER_PORT = integer("PREVIEW_MAX_CONNECTIONS_PER_PORT", 256, low=1,
                                        high=100_000)
PREVIEW_MAX_CONNECTIONS_PER_CLIENT = integer("PREVIEW_MAX_CONNECTIONS_PER_CLIENT", 64, low=1,
                                          high=100_000)
# How long a connection is held while the app does not listen yet (then it is closed).
PREVIEW_HOLD_SECONDS = number("PREVIEW_HOLD_SECONDS", 30.0, low=0, high=600)
# Open event streams (SSE: /events, /exec, /exec/{id}/logs, /previews/{bucket}/logs; the events
# websocket) per principal; one more answers 429 `too_many_streams` (websocket: close 4429).
STREAMS_PER_PRINCIPAL = integer("STREAMS_PER_PRINCIPAL", 32, low=1, high=100_000)
# Finished background commands whose output stays on disk (WELDR_ENV_VOL/exec-logs), oldest
# removed first; each stream of a command is capped at EXEC_OUTPUT_MAX_BYTES there.
EXEC_LOGS_KEEP = integer("EXEC_LOGS_KEEP", 200, low=1, high=100_000)

