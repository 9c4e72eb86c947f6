"""Input and output shapes of the previews API (docs/api.md, "Previews")."""

from __future__ import annotations

from django.conf import settings
from rest_framework import serializers

from previews import system
from previews.errors import InvalidPort
from previews.models import Preview
from weldr_agent.serializers import StrictSerializer

COMMAND_MAX_CHARS = 8192
# S3's bucket names: the name ends up in paths, container and host names.
BUCKET_PATTERN = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"


def preview_url(request, *, bucket: str, port: int) -> str:  # type: ignore[no-untyped-def]
    """Where a browser opens the preview: its own host name under PREVIEW_DOMAIN (https when
    the API was called over https, as behind Fly's TLS), else the agent's host name and port."""
    if settings.PREVIEW_DOMAIN:
        secure = request is not None and (
            request.is_secure() or request.headers.get("X-Forwarded-Proto") == "https")
        return (f"{'https' if secure else 'http'}://{bucket}-{port}.{settings.PREVIEW_DOMAIN}"
                f":{port}/")
    host = request.get_host().rsplit(":", 1)[0] if request is not None else "127.0.0.1"
    if host.startswith("[") is False and ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/"


class PreviewSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    exit_code = serializers.IntegerField(allow_null=True)
    started_at = serializers.DateTimeField(allow_null=True)

    class Meta:
        model = Preview
        fields = ["bucket", "port", "status", "access", "command", "url", "started_at",
                  "exit_code"]

    def get_url(self, preview: Preview) -> str:
        return preview_url(self.context.get("request"), bucket=preview.bucket, port=preview.port)


class PreviewListSerializer(serializers.Serializer):
    previews = PreviewSerializer(many=True)


class PreviewStartSerializer(StrictSerializer):
    bucket = serializers.RegexField(BUCKET_PATTERN, max_length=63)
    port = serializers.JSONField(required=False, allow_null=True)
    command = serializers.CharField(required=False, allow_null=True, allow_blank=False,
                                    max_length=COMMAND_MAX_CHARS, trim_whitespace=False)
    env = serializers.DictField(child=serializers.JSONField(), required=False, allow_null=True)
    # Default PREVIEW_ACCESS (production: token).
    access = serializers.ChoiceField(choices=Preview.Access.choices, required=False)

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


class PreviewTokenCreateSerializer(StrictSerializer):
    port = serializers.JSONField(required=False, allow_null=True,
                                 help_text="the preview's port (default: its current one)")
    ttl_seconds = serializers.IntegerField(required=False, min_value=10,
                                           help_text="default PREVIEW_TOKEN_TTL_SECONDS, at most "
                                                     "PREVIEW_TOKEN_MAX_TTL_SECONDS")
    one_shot = serializers.BooleanField(default=False,
                                        help_text="the link opens the preview once (its cookie "
                                                  "then carries on)")

    validate_port = PreviewStartSerializer.validate_port

    def validate_ttl_seconds(self, value: int) -> int:
        if value > settings.PREVIEW_TOKEN_MAX_TTL_SECONDS:
            limit = settings.PREVIEW_TOKEN_MAX_TTL_SECONDS
            raise serializers.ValidationError(f"At most {limit} (PREVIEW_TOKEN_MAX_TTL_SECONDS).")
        return value


class PreviewTokenSerializer(serializers.Serializer):
    token = serializers.CharField()
    expires_at = serializers.DateTimeField()
    url = serializers.CharField(help_text="the preview's URL with the token (opens it once, then "
                                          "a cookie for the preview's host carries on)")
    bucket = serializers.CharField()
    port = serializers.IntegerField()
    one_shot = serializers.BooleanField()


class PreviewStopSerializer(StrictSerializer):
    bucket = serializers.RegexField(BUCKET_PATTERN, max_length=63)


class LogQuerySerializer(serializers.Serializer):
    tail = serializers.IntegerField(min_value=1, max_value=100_000, default=200)
