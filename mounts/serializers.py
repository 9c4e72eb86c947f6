from __future__ import annotations

from rest_framework import serializers

from mounts.models import Mount


class MountSerializer(serializers.ModelSerializer[Mount]):
    path = serializers.CharField(read_only=True)

    class Meta:
        model = Mount
        fields = ["bucket", "path", "status", "cache_size_mb", "buffer_size_mb", "mounted_at",
                  "restored", "synced_at", "error"]
        read_only_fields = fields


class MountListSerializer(serializers.Serializer):  # type: ignore[type-arg]
    mounts = MountSerializer(many=True)


class MountCreateSerializer(serializers.Serializer):  # type: ignore[type-arg]
    # The name's rules are checked by the service (400 invalid_bucket), not here.
    bucket = serializers.CharField(max_length=255, trim_whitespace=False)


class MountRemoveSerializer(serializers.Serializer):  # type: ignore[type-arg]
    bucket = serializers.CharField(max_length=255, trim_whitespace=False)
    force = serializers.BooleanField(default=False)


class UnmountedSerializer(serializers.Serializer):  # type: ignore[type-arg]
    bucket = serializers.CharField()
    status = serializers.ChoiceField(choices=["unmounted"])
