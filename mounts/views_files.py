"""The files API (docs/api.md, "Files"): thin views over mounts.files (and mounts.workspace_fs)."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.parsers import BaseParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from mounts import files, paths
from weldr_agent.serializers import error_responses

PATH_PARAM = OpenApiParameter("path", str, required=False,
                              description="Relative to the workspace root (default: the root).")
ERRORS = error_responses(
    400, 404, 409, 413,
    e400="invalid_path (outside the workspace: `..`, absolute, NUL) / is_symlink (the path "
         "is or passes through a symlink: the agent never follows links) / not_a_file (a "
         "directory, FIFO, device) / not_a_directory",
    e404="not_found", e409="not_mounted / directory_not_empty",
    e413="payload_too_large (FILE_UPLOAD_MAX_BYTES)",
)


class EntrySerializer(serializers.Serializer):
    name = serializers.CharField()
    type = serializers.ChoiceField(choices=["file", "dir", "symlink", "other"])
    size = serializers.IntegerField()
    mtime = serializers.DateTimeField()


class ListingSerializer(serializers.Serializer):
    entries = EntrySerializer(many=True)


class WrittenSerializer(serializers.Serializer):
    path = serializers.CharField()
    size = serializers.IntegerField()


class RawBodyParser(BaseParser):
    """Any media type: the view reads the raw body itself (streamed, size-capped)."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):  # type: ignore[no-untyped-def]
        return stream


def _path(request: Request) -> str:
    return request.query_params.get("path", "")


class FilesView(APIView):
    @extend_schema(summary="List a directory of the workspace", parameters=[PATH_PARAM],
                   responses={200: ListingSerializer, **ERRORS})
    def get(self, request: Request, bucket: str) -> Response:
        workspace = paths.workspace(bucket)
        entries = files.file_list(workspace=workspace, path=_path(request))
        return Response({"entries": EntrySerializer(entries, many=True).data})


class FileContentView(APIView):
    # Uploads stream through request.stream, capped by FILE_UPLOAD_MAX_BYTES rather than the
    # JSON body cap (weldr_agent.middleware), chunked or not.
    max_body_bytes = staticmethod(lambda: settings.FILE_UPLOAD_MAX_BYTES)
    parser_classes = [RawBodyParser]

    @extend_schema(summary="Read a file (its bytes)", parameters=[PATH_PARAM],
                   responses={(200, "application/octet-stream"): OpenApiTypes.BINARY,
                              **ERRORS})
    def get(self, request: Request, bucket: str) -> HttpResponse:
        workspace = paths.workspace(bucket)
        opened = files.file_open(workspace=workspace, path=_path(request))
        response = StreamingHttpResponse(files.file_chunks(opened.fd),
                                         content_type=opened.content_type)
        response["Content-Length"] = str(opened.size)
        return response

    @extend_schema(summary="Write a file atomically (body: the bytes)", parameters=[PATH_PARAM],
                   request={"application/octet-stream": OpenApiTypes.BINARY},
                   responses={200: WrittenSerializer, **ERRORS})
    def put(self, request: Request, bucket: str) -> Response:
        workspace = paths.workspace(bucket)
        length = request.META.get("CONTENT_LENGTH")
        size = files.file_write(workspace=workspace, path=_path(request),
                                body=request._request,
                                length=int(length) if length and length.isdigit() else None)
        return Response({"path": paths.clean(_path(request)), "size": size})

    @extend_schema(summary="Delete a file, a symlink or (recursive=true) a directory",
                   parameters=[PATH_PARAM, OpenApiParameter("recursive", bool, required=False)],
                   responses={204: None, **ERRORS})
    def delete(self, request: Request, bucket: str) -> Response:
        workspace = paths.workspace(bucket)
        recursive = request.query_params.get("recursive", "").lower() in ("1", "true", "yes")
        files.file_delete(workspace=workspace, path=_path(request), recursive=recursive)
        return Response(status=204)
