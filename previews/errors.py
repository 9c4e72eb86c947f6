"""The previews API's typed errors (docs/api.md, "Previews")."""

from __future__ import annotations

from weldr_agent.errors import APIError, ConflictError, NotFoundError, ServiceUnavailable


class NoPreview(NotFoundError):
    default_code = "no_preview"
    default_detail = "This bucket has no preview; start one with POST /previews/start."


class InvalidPort(APIError):
    default_code = "invalid_port"
    default_detail = "The port must be a whole number from 3000 to 3019."


class PreviewExists(ConflictError):
    default_code = "preview_exists"
    default_detail = "This bucket already runs a preview; stop it first (POST /previews/stop)."


class PortInUse(ConflictError):
    default_code = "port_in_use"
    default_detail = "That port is already used; leave `port` out to get a free one."


class NoFreePort(ServiceUnavailable):
    default_code = "no_free_port"
    default_detail = "All 20 preview ports (3000-3019) are in use; stop a preview first."


class NoStartCommand(APIError):
    default_code = "no_start_command"
    default_detail = ("No `command` given and the workspace's package.json has no `dev` or "
                      "`start` script.")


class PreviewRunning(ConflictError):
    default_code = "preview_running"
    default_detail = "The bucket runs a preview; stop it first or unmount with force."
