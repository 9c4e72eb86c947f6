"""A test-only endpoint that accepts a JSON body, to exercise the plumbing's bad-input paths
(the foundation itself has no such endpoint). `ROOT_URLCONF = "tests.auth.echo"` adds it to
the agent's URLs; `tests.auth.echo_settings` does that for a real `manage.py serve`.
"""

from __future__ import annotations

from django.urls import path
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from weldr_agent import access
from weldr_agent.serializers import StrictSerializer
from weldr_agent.urls import urlpatterns as agent_urlpatterns


class OptionsSerializer(StrictSerializer):
    flag = serializers.BooleanField()


class EchoSerializer(StrictSerializer):
    name = serializers.CharField(max_length=20)
    count = serializers.IntegerField(min_value=0, max_value=10, required=False)
    options = OptionsSerializer(required=False)
    tags = serializers.ListField(child=serializers.CharField(), required=False)
    id = serializers.CharField(read_only=True)


class EchoView(APIView):
    tenant = access.NOTHING  # a test view: it touches no project or bucket

    @extend_schema(request=EchoSerializer, responses=EchoSerializer)
    def post(self, request: Request) -> Response:
        serializer = EchoSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return Response(serializer.validated_data)


class UploadView(APIView):
    """Like a file upload: a larger cap, and the body read as a stream (not parsed as JSON)."""

    max_body_bytes = 8 * 1024 * 1024
    tenant = access.NOTHING

    @extend_schema(request={"application/octet-stream": bytes},
                   responses=inline_serializer("Uploaded", {"bytes": serializers.IntegerField()}))
    def put(self, request: Request) -> Response:
        return Response({"bytes": len(request.stream.read())})


urlpatterns = [
    path("_test/echo", EchoView.as_view()),
    path("_test/upload", UploadView.as_view()),
    *agent_urlpatterns,
]
handler404 = "weldr_agent.errors.handler404"
handler500 = "weldr_agent.errors.handler500"
