"""Thin views of the previews API (docs/api.md, "Previews")."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import renderers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from previews import http_proxy, logs, services, system, tokens
from previews.serializers import (
    LogQuerySerializer,
    PreviewListSerializer,
    PreviewSerializer,
    PreviewStartSerializer,
    PreviewStopSerializer,
    PreviewTokenCreateSerializer,
    PreviewTokenSerializer,
    preview_url,
)
from weldr_agent import access, limits
from weldr_agent.schema import event_stream_response
from weldr_agent.serializers import error_responses
from weldr_agent.sse import (
    EventStreamNegotiation,
    EventStreamRenderer,
    last_event_id,
    sse_response,
)

ERRORS = error_responses(400, 404, 409, 503)


class PreviewListView(APIView):
    tenant = access.LISTS

    @extend_schema(operation_id="previews_list", responses={200: PreviewListSerializer})
    def get(self, request: Request) -> Response:
        visible = access.visible_buckets(request.user)
        previews = [p for p in services.preview_list()
                    if visible is None or access.owning_bucket(p.bucket) in visible]
        return Response({"previews": PreviewSerializer(previews, many=True,
                                                       context={"request": request}).data})


class PreviewDetailView(APIView):
    @extend_schema(responses={200: PreviewSerializer, 404: ERRORS[404]})
    def get(self, request: Request, bucket: str) -> Response:
        preview = services.preview_get(bucket=bucket)
        return Response(PreviewSerializer(preview, context={"request": request}).data)


class PreviewStartView(APIView):
    tenant = access.Objects(body=("bucket",))

    @extend_schema(request=PreviewStartSerializer,
                   responses={201: PreviewSerializer, **ERRORS})
    def post(self, request: Request) -> Response:
        serializer = PreviewStartSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        preview = services.preview_start(**serializer.validated_data)
        return Response(PreviewSerializer(preview, context={"request": request}).data,
                        status=status.HTTP_201_CREATED)


class PreviewStopView(APIView):
    tenant = access.Objects(body=("bucket",))

    @extend_schema(request=PreviewStopSerializer,
                   responses={200: PreviewSerializer, 404: ERRORS[404]})
    def post(self, request: Request) -> Response:
        serializer = PreviewStopSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        preview = services.preview_stop(**serializer.validated_data)
        return Response(PreviewSerializer(preview, context={"request": request}).data)


class PreviewTokenView(APIView):
    @extend_schema(request=PreviewTokenCreateSerializer,
                   responses={201: PreviewTokenSerializer, 400: ERRORS[400], 404: ERRORS[404]})
    def post(self, request: Request, bucket: str) -> Response:
        serializer = PreviewTokenCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        token, claims = tokens.preview_token_create(bucket=bucket, **serializer.validated_data)
        url = preview_url(request, bucket=claims.bucket, port=claims.port)
        return Response(PreviewTokenSerializer({
            "token": token, "url": f"{url}?{http_proxy.TOKEN_PARAM}={token}",
            "expires_at": datetime.fromtimestamp(claims.expires, tz=UTC),
            "bucket": claims.bucket, "port": claims.port,
            "one_shot": claims.kind == tokens.ONE_SHOT,
        }).data, status=status.HTTP_201_CREATED)


class _TextRenderer(renderers.BaseRenderer):
    """Lets a client ask for text; an error body still comes out as the usual JSON."""

    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):  # type: ignore[no-untyped-def]
        return data if isinstance(data, (str, bytes)) else json.dumps(data)


class PlainTextRenderer(_TextRenderer):
    media_type = "text/plain"
    format = "txt"


class PreviewLogsView(EventStreamNegotiation, APIView):
    renderer_classes = [renderers.JSONRenderer, PlainTextRenderer, EventStreamRenderer]

    @extend_schema(
        parameters=[OpenApiParameter("tail", int, description="lines (default 200)")],
        responses={(200, "text/plain"): OpenApiTypes.STR,
                   (200, "text/event-stream"): event_stream_response(
                       {"log": {"type": "object", "required": ["line"],
                                "properties": {"line": {"type": "string"}}},
                        "end": {"type": "object"}},
                       description="`log` {line} per line, then `end` when the preview stops."),
                   400: ERRORS[400], 404: ERRORS[404],
                   **error_responses(429, e429="too_many_streams")},
    )
    def get(self, request: Request, bucket: str) -> HttpResponse:
        query = LogQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        text = services.log_tail(bucket=bucket, lines=query.validated_data["tail"])
        if "text/event-stream" not in request.headers.get("Accept", ""):
            return HttpResponse(text, content_type="text/plain; charset=utf-8")
        # Each line's id is its end offset in app.log: Last-Event-ID resumes after it (an id
        # that is not one is ignored: the stream starts from the tail).
        stream = logs.follow(system.log_path(bucket), tail=query.validated_data["tail"],
                             last_id=last_event_id(request, strict=False),
                             still_active=lambda: services.preview_active(bucket))
        return sse_response(limits.counted(principal=request.user, stream=stream))
