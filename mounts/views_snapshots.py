"""Snapshots, restores and retention (docs/snapshots.md): thin views over mounts.snapshots."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from mounts import services, snapshots, snapshots_forks
from mounts.serializers_snapshots import (
    ForkCreateSerializer,
    ForkSerializer,
    PolicySerializer,
    PolicySetSerializer,
    PromotedSerializer,
    RestoredSerializer,
    SnapshotCreateSerializer,
    SnapshotListSerializer,
    SnapshotSerializer,
)
from weldr_agent.serializers import error_responses

E404 = "not_mounted (bucket) / snapshot_not_found"
E409 = ("snapshots_unavailable (the files layout has no snapshots) / not_mounted / mount_busy")


class SnapshotListView(APIView):
    @extend_schema(summary="The bucket's snapshots, as its volume lists them",
                   description="Read from the sidecars in the volume (so in S3): a new machine "
                               "that mounts the bucket lists the same. With `?sizes=1`, "
                               "`size_bytes` is measured: the data only that snapshot holds "
                               "(otherwise the last measured value, or null).",
                   parameters=[OpenApiParameter("sizes", bool, required=False,
                                                description="Measure size_bytes now.")],
                   responses={200: SnapshotListSerializer,
                              **error_responses(400, 404, 409, e404=E404, e409=E409)})
    def get(self, request: Request, bucket: str) -> Response:
        sizes = request.query_params.get("sizes", "") in ("1", "true")
        rows = snapshots.snapshot_list(bucket=bucket, sizes=sizes)
        return Response({"snapshots": SnapshotSerializer(rows, many=True).data})

    @extend_schema(summary="Take a snapshot of the workspace",
                   description="Freezes the workspace's ext4 (writers wait, `frozen_ms`), "
                               "clones its image in JuiceFS (metadata only) and thaws. "
                               "Crash-consistent: no write is half in it.",
                   request=SnapshotCreateSerializer,
                   responses={201: SnapshotSerializer,
                              **error_responses(400, 404, 409, 500, e400="invalid_bucket / "
                                                "invalid_snapshot_name", e404=E404, e409=E409,
                                                e500="snapshot_failed / sync_failed")})
    def post(self, request: Request, bucket: str) -> Response:
        data = SnapshotCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        row = snapshots.snapshot_create(bucket=bucket, name=data.validated_data["name"],
                                        note=data.validated_data["note"])
        if data.validated_data["durable"]:
            services.mount_sync(bucket=bucket)
        snapshots.snapshot_created_publish(row)
        return Response(SnapshotSerializer(row).data, status=status.HTTP_201_CREATED)


class SnapshotDetailView(APIView):
    @extend_schema(summary="Delete a snapshot",
                   responses={204: None, **error_responses(400, 404, 409, e404=E404,
                                                           e409=E409)})
    def delete(self, request: Request, bucket: str, snapshot_id: str) -> Response:
        snapshots.snapshot_delete(bucket=bucket, snapshot_id=snapshot_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class SnapshotRestoreView(APIView):
    @extend_schema(summary="Put the workspace back to a snapshot",
                   description="Stops the bucket's preview and commands (listed in the "
                               "answer), swaps the workspace's image for a clone of the "
                               "snapshot and mounts it again. The snapshot stays. 409 "
                               "run_active while a workflow run is active on a branch of "
                               "this bucket.",
                   request=None,
                   responses={200: RestoredSerializer,
                              **error_responses(400, 404, 409, 500, e404=E404,
                                                e409=E409 + " / run_active",
                                                e500="restore_failed")})
    def post(self, request: Request, bucket: str, snapshot_id: str) -> Response:
        return Response(snapshots.snapshot_restore(bucket=bucket, snapshot_id=snapshot_id))


class SnapshotPolicyView(APIView):
    @extend_schema(summary="The bucket's snapshot retention",
                   responses={200: PolicySerializer,
                              **error_responses(400, 404, 409, e404=E404, e409=E409)})
    def get(self, request: Request, bucket: str) -> Response:
        policy = snapshots.policy_get(bucket=bucket)
        return Response({"keep": policy.keep, "max_age_days": policy.max_age_days})

    @extend_schema(summary="Set the bucket's snapshot retention (kept in its volume)",
                   description="Applied at once and after every snapshot; the newest snapshot "
                               "is never deleted by it.",
                   request=PolicySerializer,
                   responses={200: PolicySetSerializer,
                              **error_responses(400, 404, 409, e404=E404, e409=E409)})
    def put(self, request: Request, bucket: str) -> Response:
        data = PolicySerializer(data=request.data)
        data.is_valid(raise_exception=True)
        policy, deleted = snapshots.policy_set(bucket=bucket, **data.validated_data)
        return Response({"keep": policy.keep, "max_age_days": policy.max_age_days,
                         "deleted": deleted})


class SnapshotForkView(APIView):
    @extend_schema(summary="Mount a new workspace from a snapshot (a fork)",
                   description="Clones the snapshot's image in the bucket's volume and mounts "
                               "it at WORKSPACE_BASE/{name}: its own sandbox, previews, exec "
                               "and files, addressed by `name` like a bucket; it takes one "
                               "mount slot and shares the bucket's JuiceFS. POST "
                               "/mounts/unmount {name} unmounts and deletes it.",
                   request=ForkCreateSerializer,
                   responses={201: ForkSerializer,
                              **error_responses(400, 404, 409, 500, e400="invalid_bucket",
                                                e404=E404, e409=E409 + " / mount_limit / "
                                                "fork_conflict", e500="snapshot_failed / "
                                                "mount_failed")})
    def post(self, request: Request, bucket: str, snapshot_id: str) -> Response:
        data = ForkCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fork = snapshots_forks.fork_create(bucket=bucket, snapshot_id=snapshot_id,
                                           name=data.validated_data["name"])
        return Response(ForkSerializer(fork).data, status=status.HTTP_201_CREATED)


class ForkPromoteView(APIView):
    @extend_schema(summary="Make a fork its bucket's main workspace",
                   description="`bucket` is the fork's name. Both workspaces are unmounted "
                               "(their previews and commands stopped and listed), the fork's "
                               "image replaces the bucket's, the bucket is mounted again; the "
                               "fork is gone. 409 run_active while a workflow run is active on "
                               "a branch of the bucket.",
                   request=None,
                   responses={200: PromotedSerializer,
                              **error_responses(400, 404, 409, e404="fork_not_found",
                                                e409="run_active / mount_busy")})
    def post(self, request: Request, bucket: str) -> Response:
        return Response(snapshots_forks.fork_promote(name=bucket))
