"""Input and output shapes of the previews API (docs/api.md, "Previews")."""

from __future__ import annotations

from django.conf import settings
from rest_framework import serializers

from previews import system
from previews.errors import InvalidPort
from previews.models import Preview

COMMAND_MAX_CHARS = 8192
# S3's bucket names: the name ends up in paths, container and host names.
BUCKET_PATTERN = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"


class PreviewSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    exit_code = serializers.IntegerField(allow_null=True)
    started_at = serializers.DateTimeField(allow_null=True)

    class Meta:
        model = Preview
        fields = ["bucket", "port", "status", "command", "url", "started_at", "exit_code"]

    def get_url(self, preview: Preview) -> str:
        request = self.context.get("request")
        host = request.get_host().rsplit(":", 1)[0] if request is not None else "127.0.0.1"
        if host.startswith("[") is False and ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{preview.port}/"


class PreviewListSerializer(serializers.Serializer):
    previews = PreviewSerializer(many=True)


class PreviewStartSerializer(serializers.Serializer):
    bucket = serializers.RegexField(BUCKET_PATTERN, max_length=63)
    port = serializers.JSONField(required=False, allow_null=True)
    command = serializers.CharField(required=False, allow_null=True, allow_blank=False,
                                    max_length=COMMAND_MAX_CHARS, trim_whitespace=False)
    env = serializers.DictField(child=serializers.JSONField(), required=False, allow_null=True)

    def validate_port(self, value: object) -> int | None:
        if value is None:
            return None
        # JSON numbers only: "3000", 3000.5, true are refused like 2999 and 3020.
        if isinstance(value, bool) or not isinstance(value, int) or not (
                settings.PREVIEW_PORT_MIN <= value <= settings.PREVIEW_PORT_MAX):
            raise InvalidPort()
        return value

    def validate_command(self, value: str | None) -> str | None:
        if value is not None and ("\0" in value or not value.strip()):
            raise serializers.ValidationError("The command must be a non-empty string.")
        return value

    def validate_env(self, value: dict | None) -> dict | None:
        errors = system.env_errors(value or {})
        if errors:
            raise serializers.ValidationError(errors)
        return value


class PreviewStopSerializer(serializers.Serializer):
    bucket = serializers.RegexField(BUCKET_PATTERN, max_length=63)


class LogQuerySerializer(serializers.Serializer):
    tail = serializers.IntegerField(min_value=1, max_value=100_000, default=200)
