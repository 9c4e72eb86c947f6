"""The OpenAPI generator: drf-spectacular's, plus the error responses every operation can give,
and the security schemes of weldr_agent.auth.

Apps declare their specific errors (`error_responses(404, 409)` from weldr_agent.serializers);
this adds the ones the plumbing produces, so the document never omits them:
401/403 where credentials are required, 400/413/415 where a body is accepted, 404 where the
path has a parameter or the view names an object in its body or query (weldr_agent.access).

Event streams (`text/event-stream`) are declared one event at a time, the way OpenAPI 3.2's
`itemSchema` does and what schemathesis reads from the `schema` of an OpenAPI 3.0 document: an
object `{event, data, id?, retry?}`, one alternative per event name, whose `data` is a JSON
document described by `contentMediaType`/`contentSchema`. `event_stream_response()` builds one.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.plumbing import force_instance, is_list_serializer
from drf_spectacular.utils import OpenApiResponse
from rest_framework.permissions import AllowAny

from weldr_agent import access
from weldr_agent.serializers import RejectUnknownFields, error_responses

EVENT_STREAM = "text/event-stream"
# S3's bucket names, as every app checks them (mounts.validators); declared on every `{bucket}`.
BUCKET_SCHEMA = {"type": "string", "pattern": r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
                 "description": "An S3 bucket name (also without '..', and not an IP address)."}


def sse_event(name: str, data: dict[str, Any]) -> dict[str, Any]:
    """The schema of one server-sent event named `name` whose data is JSON matching `data`."""
    return {
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "event": {"type": "string", "enum": [name]},
            "id": {"type": "string"},
            "retry": {"type": "integer"},
            "data": {"type": "string", "contentMediaType": "application/json",
                     "contentSchema": data},
        },
    }


def event_stream_response(events: dict[str, dict[str, Any]], description: str) -> OpenApiResponse:
    """A `text/event-stream` response: each event is one of `events` (name -> data schema)."""
    return OpenApiResponse({"oneOf": [sse_event(name, data) for name, data in events.items()]},
                           description=description)


class AutoSchema(SpectacularAutoSchema):
    def _is_list_view(self, serializer: Any = None) -> bool:
        # Our views are APIViews that wrap collections in an object ({"mounts": [...]}): a
        # response is a bare array only when it is declared as one (many=True).
        return is_list_serializer(serializer)

    def _map_serializer(self, serializer: Any, direction: str,
                        bypass_extensions: bool = False) -> dict[str, Any]:
        schema = super()._map_serializer(serializer, direction, bypass_extensions)
        # A strict serializer refuses fields it does not declare: its request shape says so
        # (requests and responses are separate components: COMPONENT_SPLIT_REQUEST).
        if direction == "request" and isinstance(force_instance(serializer),
                                                 RejectUnknownFields):
            schema["additionalProperties"] = False
        return schema

    def get_operation_id(self) -> str:
        # A collection's GET is a list even when its body is an object (see _is_list_view).
        operation_id = super().get_operation_id()
        if self.method == "GET" and "{" not in self.path and operation_id.endswith("_retrieve"):
            return operation_id.removesuffix("_retrieve") + "_list"
        return operation_id

    def _resolve_path_parameters(self, variables: list[str]) -> list[dict[str, Any]]:
        # A bucket is untyped in the URLconf (`<str:bucket>`); declare what the views accept, so
        # a client (or a fuzzer) knows that "0" is refused with 400 rather than looked up.
        parameters = super()._resolve_path_parameters(variables)
        for parameter in parameters:
            if parameter["name"] == "bucket":
                parameter["schema"] = dict(BUCKET_SCHEMA)
        return parameters

    def _plumbing_errors(self) -> list[int]:
        codes = []
        if self.method in ("POST", "PUT", "PATCH"):
            codes += [400, 413, 415]
        if self.view.authentication_classes and not all(
            isinstance(permission, AllowAny) for permission in self.view.get_permissions()
        ):
            codes += [401, 403]
        # A path parameter, or an object named in the body or query (weldr_agent.access: a
        # refused one answers 404 like a missing one).
        if "{" in self.path or access.declares_objects(self.view, self.method):
            codes.append(404)
        return codes

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        responses = super()._get_response_bodies(direction)
        for code, response in error_responses(*self._plumbing_errors()).items():
            if str(code) not in responses:
                responses[str(code)] = self._get_response_for_code(response, str(code),
                                                                   direction=direction)
        for code, response in responses.items():
            # An error is JSON even when the client asked for a stream (weldr_agent.sse); the
            # per-event schema of a stream does not describe it.
            if not code.startswith("2") and len(response.get("content", {})) > 1:
                response["content"].pop(EVENT_STREAM, None)
        return dict(sorted(responses.items()))


class AgentTokenScheme(OpenApiAuthenticationExtension):
    target_class = "weldr_agent.auth.AgentTokenAuthentication"
    name = "agentToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {"type": "http", "scheme": "bearer",
                "description": "An agent token from `manage.py create_api_token` (`wat_…`)."}


class JWTScheme(OpenApiAuthenticationExtension):
    target_class = "weldr_agent.auth.BetterAuthJWTAuthentication"
    name = "betterAuthJwt"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                "description": "A JWT from the platform's Better Auth, checked against "
                               "its JWKS at `BETTER_AUTH_URL` + `BETTER_AUTH_BASE_PATH` "
                               "(`/api/auth`) + `/jwks`."}


class SessionScheme(OpenApiAuthenticationExtension):
    target_class = "weldr_agent.auth.BetterAuthSessionAuthentication"
    name = "sessionCookie"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        from weldr_agent.auth import session_cookie_names

        return {"type": "apiKey", "in": "cookie", "name": session_cookie_names()[1],
                "description": "Better Auth's signed session cookie (or its `__Secure-` "
                               "variant). The same session is also accepted as "
                               "`Authorization: Bearer <token>`, signed or raw."}


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "weldr_agent.auth.BetterAuthApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {"type": "apiKey", "in": "header", "name": "x-api-key",
                "description": "A Better Auth API key (@better-auth/api-key)."}
