"""Service-wide endpoints: health and who-am-I."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from weldr_agent import access
from weldr_agent.health import CAPABILITIES, CHECKS, FIGURES, figures, run_checks

HealthSerializer = inline_serializer(
    name="Health",
    fields={
        "status": serializers.ChoiceField(choices=["ok", "degraded"]),
        "version": serializers.CharField(),
        "checks": inline_serializer(
            name="HealthChecks",
            fields={name: serializers.CharField() for name in CHECKS},
        ),
        "capabilities": inline_serializer(
            name="HealthCapabilities",
            fields={name: serializers.CharField() for name in CAPABILITIES},
            help_text="What this machine offers beyond the required checks: `ok` or why not. "
                      "Informational: never part of `status`. `loop_devices`: the image "
                      "layout needs them; without, new volumes get the files layout and an "
                      "image volume answers 409 `layout_unavailable`.",
        ),
        # The apps' figures (health.figure_register): oci_runtime, mounts, previews.
        **{name: figure.field for name, figure in FIGURES.items()},
    },
)


class HealthView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        summary="Check every dependency",
        description="200 when every check is `ok`; 503 with the failing checks' messages. "
                    "`capabilities` are reported beside them and never make it 503. Answers "
                    "within HEALTH_CHECK_TIMEOUT_SECONDS (a slow check reports `no answer`) "
                    "and reuses its answers for HEALTH_CACHE_SECONDS.",
        responses={200: HealthSerializer, 503: HealthSerializer},
        auth=[],
    )
    def get(self, request: Request) -> Response:
        checks, capabilities = run_checks()
        healthy = all(value == "ok" for value in checks.values())
        body = {
            "status": "ok" if healthy else "degraded",
            "version": settings.VERSION,
            "checks": checks,
            "capabilities": capabilities,
            **figures(),
        }
        return Response(body, status=200 if healthy else 503)


class LivenessView(APIView):
    """The process answers HTTP: nothing else is checked, so it is cheap enough for any probe."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        summary="Is the agent process alive",
        description="200 as long as the agent serves requests; checks no dependency (see "
                    "`GET /health` for those).",
        responses={200: inline_serializer(name="Liveness", fields={
            "status": serializers.ChoiceField(choices=["ok"]),
            "version": serializers.CharField()})},
        auth=[],
    )
    def get(self, request: Request) -> Response:
        return Response({"status": "ok", "version": settings.VERSION})


WhoAmISerializer = inline_serializer(
    name="WhoAmI",
    fields={
        "kind": serializers.ChoiceField(choices=["agent_token", "session", "jwt", "api_key"]),
        "name": serializers.CharField(help_text="Token name, user id or API key prefix."),
        "user_id": serializers.CharField(allow_null=True,
                                         help_text="The Better Auth user; null for agent tokens."),
    },
)


class WhoAmIView(APIView):
    tenant = access.NOTHING

    @extend_schema(
        summary="Who is calling",
        description="The principal the agent authenticated this request as: useful to check a "
                    "credential (and, for platform users, that they own `PROJECT_ID`).",
        responses={200: WhoAmISerializer},
    )
    def get(self, request: Request) -> Response:
        principal = request.user
        return Response({"kind": principal.kind, "name": principal.name,
                         "user_id": principal.user_id})
