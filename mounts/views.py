"""Thin views over mounts.services: fetch, validate, call one service, serialize."""

from __future__ import annotations

from django.db.models import Q
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from mounts import services
from mounts.models import Mount
from mounts.serializers import (
    MountCreateSerializer,
    MountListSerializer,
    MountRemoveSerializer,
    MountSerializer,
    UnmountedSerializer,
)
from weldr_agent import access

Error = inline_serializer(name="MountError", fields={"detail": serializers.CharField(),
                                                "code": serializers.CharField()})


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(response=Error, description=description)


class MountViewSet(viewsets.ViewSet):
    lookup_field = "bucket"
    lookup_value_regex = "[^/]+"
    # retrieve and sync name the bucket in their URL (weldr_agent.access checks it).
    tenant = {"list": access.LISTS, "create": access.Objects(body=("bucket",)),
              "unmount": access.Objects(body=("bucket",))}

    @extend_schema(summary="List mounts", responses={200: MountListSerializer})
    def list(self, request: Request) -> Response:
        mounts = Mount.objects.all()
        if (visible := access.visible_buckets(request.user)) is not None:
            # a fork (its `parent` set) is its parent bucket's
            mounts = mounts.filter(Q(bucket__in=visible) | Q(parent__in=visible))
        return Response({"mounts": MountSerializer(mounts, many=True).data})

    @extend_schema(summary="One mount", responses={
        200: MountSerializer, 400: _error("invalid_bucket"), 404: _error("not_mounted")})
    def retrieve(self, request: Request, bucket: str) -> Response:
        return Response(MountSerializer(services.mount_get(bucket=bucket)).data)

    @extend_schema(
        summary="Mount a bucket at WORKSPACE_BASE/{bucket}",
        description="Creates the bucket when missing, takes its lease (one machine writes a "
                    "bucket at a time: 409 bucket_in_use while another holds it; `force` "
                    "takes it over), restores its metadata from S3 when the local copy is gone "
                    "or another machine wrote the bucket since, and returns once the workspace "
                    "answers.",
        request=MountCreateSerializer,
        responses={201: MountSerializer, 200: MountSerializer, 400: _error("invalid_bucket"),
                   409: _error("mount_limit | mount_busy | volume_gone | layout_mismatch | "
                               "bucket_in_use (with `holder`, `lease_age_seconds`, "
                               "`lease_ttl_seconds`)"),
                   500: _error("mount_failed"),
                   502: _error("storage_unavailable")},
    )
    def create(self, request: Request) -> Response:
        data = MountCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        mount, created = services.mount_create(bucket=data.validated_data["bucket"],
                                               layout=data.validated_data.get("layout"),
                                               force=data.validated_data["force"])
        return Response(MountSerializer(mount).data,
                        status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    @extend_schema(
        summary="Unmount a bucket",
        description="Flushes every write to S3 (staged blocks and a confirmed final Litestream "
                    "sync) before unmounting. With `force`, a running preview is stopped first.",
        request=MountRemoveSerializer,
        responses={200: UnmountedSerializer, 400: _error("invalid_bucket"),
                   404: _error("not_mounted"), 409: _error("preview_running"),
                   500: _error("unmount_failed")},
    )
    @action(detail=False, methods=["post"])
    def unmount(self, request: Request) -> Response:
        data = MountRemoveSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.mount_remove(**data.validated_data)
        return Response({"bucket": data.validated_data["bucket"], "status": "unmounted"})

    @extend_schema(
        summary="Make every write durable in S3 now (zero RPO)",
        description="Uploads every staged block, forces a Litestream sync and waits until the "
                    "replica confirms it; returns when both are durable. `synced_at` is the "
                    "moment a restore after machine loss will reach at least.",
        request=None,
        responses={200: MountSerializer, 404: _error("not_mounted"),
                   409: _error("lease_lost"), 500: _error("sync_failed")},
    )
    @action(detail=True, methods=["post"])
    def sync(self, request: Request, bucket: str) -> Response:
        return Response(MountSerializer(services.mount_sync(bucket=bucket)).data)
