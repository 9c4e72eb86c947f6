"""Input and output of the snapshots API."""

from __future__ import annotations

from rest_framework import serializers

from mounts.models import Mount, Snapshot
from mounts.serializers import MountSerializer
from weldr_agent.serializers import StrictSerializer


class SnapshotSerializer(serializers.ModelSerializer[Snapshot]):
    id = serializers.CharField(source="snapshot_id", read_only=True)

    class Meta:
        model = Snapshot
        fields = ["id", "bucket", "name", "note", "kind", "run_id", "created_at", "frozen_ms",
                  "size_bytes"]
        read_only_fields = fields
        extra_kwargs = {
            "size_bytes": {"help_text": "Bytes only this snapshot holds (what deleting it frees "
                                        "after JuiceFS's trash days); null until listed."},
            "frozen_ms": {"help_text": "How long writers of the workspace waited (freeze to "
                                       "thaw)."},
        }


class SnapshotListSerializer(serializers.Serializer):  # type: ignore[type-arg]
    snapshots = SnapshotSerializer(many=True)


class SnapshotCreateSerializer(StrictSerializer):
    # The name's rules are checked by the service (400 invalid_snapshot_name).
    name = serializers.CharField(max_length=255, required=False, default="", allow_blank=True,
                                 trim_whitespace=False)
    note = serializers.CharField(max_length=2000, required=False, default="", allow_blank=True)
    durable = serializers.BooleanField(
        default=False,
        help_text="Also make it durable in S3 before answering (the zero-RPO sync of POST "
                  "/mounts/{bucket}/sync); otherwise it reaches S3 with the volume's next "
                  "uploads (UPLOAD_DELAY).")


class StoppedPreviewSerializer(serializers.Serializer):  # type: ignore[type-arg]
    bucket = serializers.CharField()
    status = serializers.CharField(help_text="Its status before it was stopped.")
    port = serializers.IntegerField()


class StoppedCommandSerializer(serializers.Serializer):  # type: ignore[type-arg]
    id = serializers.CharField()
    status = serializers.CharField(help_text="Its status before it was killed.")


class RestoredSerializer(serializers.Serializer):  # type: ignore[type-arg]
    bucket = serializers.CharField()
    snapshot_id = serializers.CharField()
    previews_stopped = StoppedPreviewSerializer(many=True)
    commands_stopped = StoppedCommandSerializer(many=True)


class PolicySerializer(StrictSerializer):
    keep = serializers.IntegerField(min_value=0, max_value=100000,
                                    help_text="Keep at most this many snapshots (0: no limit).")
    max_age_days = serializers.IntegerField(min_value=0, max_value=36500,
                                            help_text="Delete older ones (0: no limit).")


class PolicySetSerializer(PolicySerializer):
    deleted = serializers.ListField(child=serializers.CharField(), read_only=True,
                                    help_text="Snapshots deleted by applying it now.")


class ForkCreateSerializer(StrictSerializer):
    # Checked by the service with the bucket-name rules (400 invalid_bucket): the fork is
    # addressed where a bucket is (/exec, /previews, /files, /mounts/unmount).
    name = serializers.CharField(max_length=255, trim_whitespace=False)


class ForkSerializer(MountSerializer):
    class Meta(MountSerializer.Meta):
        model = Mount
        fields = [*MountSerializer.Meta.fields, "parent"]
        read_only_fields = fields


class PromotedSerializer(serializers.Serializer):  # type: ignore[type-arg]
    bucket = serializers.CharField(help_text="The parent bucket, whose workspace the fork is now.")
    promoted = serializers.CharField(help_text="The fork's name (gone now).")
    previews_stopped = StoppedPreviewSerializer(many=True)
    commands_stopped = StoppedCommandSerializer(many=True)
