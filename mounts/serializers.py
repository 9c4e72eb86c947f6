from __future__ import annotations

from rest_framework import serializers

from mounts.models import Layout, Mount
from weldr_agent.serializers import StrictSerializer


class MountSerializer(serializers.ModelSerializer[Mount]):
    path = serializers.CharField(read_only=True)

    class Meta:
        model = Mount
        fields = ["bucket", "path", "status", "layout", "cache_size_mb", "buffer_size_mb",
                  "mounted_at", "restored", "synced_at", "error"]
        read_only_fields = fields


class MountListSerializer(serializers.Serializer):  # type: ignore[type-arg]
    mounts = MountSerializer(many=True)


class MountCreateSerializer(StrictSerializer):
    # The name's rules are checked by the service (400 invalid_bucket), not here.
    bucket = serializers.CharField(max_length=255, trim_whitespace=False)
    layout = serializers.ChoiceField(
        choices=Layout.choices, required=False,
        help_text="Workspace layout of a NEW volume: `files` (the JuiceFS mount itself) or "
                  "`image` (an ext4 image inside the volume, loop-mounted: near local-disk "
                  "speed). Default: WORKSPACE_LAYOUT. An existing volume keeps its own layout; "
                  "asking for the other one is 409 layout_mismatch.")
    force = serializers.BooleanField(
        default=False,
        help_text="Take the bucket over from another machine whose lease has not expired "
                  "(409 bucket_in_use otherwise). For an operator who knows that machine is "
                  "gone: if it still runs, both write the bucket until its next renewal "
                  "(docs/mounts.md, \"One writer per bucket\").")


class MountRemoveSerializer(StrictSerializer):
    bucket = serializers.CharField(max_length=255, trim_whitespace=False)
    force = serializers.BooleanField(default=False)


class UnmountedSerializer(serializers.Serializer):  # type: ignore[type-arg]
    bucket = serializers.CharField()
    status = serializers.ChoiceField(choices=["unmounted"])
