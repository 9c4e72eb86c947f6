"""Input and output shapes of POST /exec and the background command endpoints (docs/api.md)."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from django.core.validators import ProhibitNullCharactersValidator
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from commands.models import ExecCommand
from weldr_agent.schema import event_stream_response
from weldr_agent.serializers import ShallowCopiedFields, StrictSerializer

BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_TIMEOUT = 3600


# Not blank: a command of white space only is refused (400), like an empty argv.
@extend_schema_field({"oneOf": [{"type": "string", "pattern": r"\S"},
                                {"type": "array", "items": {"type": "string"}, "minItems": 1}],
                      "description": "A `sh -c` string, or an argv list run without a shell."})
class CommandField(serializers.Field):
    def to_internal_value(self, data: Any) -> str | list[str]:
        if isinstance(data, str):
            if not data.strip():
                raise serializers.ValidationError("The command is empty.")
            if "\x00" in data:
                raise serializers.ValidationError("The command contains a NUL byte.")
            return data
        if isinstance(data, list) and data and all(isinstance(a, str) for a in data):
            if not data[0] or any("\x00" in a for a in data):
                raise serializers.ValidationError("argv entries must be non-empty, without NUL.")
            return data
        raise serializers.ValidationError("Give a string or a non-empty list of strings.")

    def to_representation(self, value: Any) -> Any:
        return value


class PathField(serializers.CharField):
    """A workspace path: NUL bytes reach the path checks (400 invalid_path), not `invalid`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.validators = [v for v in self.validators
                           if not isinstance(v, ProhibitNullCharactersValidator)]


class ExecRequestSerializer(ShallowCopiedFields, StrictSerializer):
    bucket = serializers.RegexField(BUCKET_RE, error_messages={
        "invalid": "A bucket name is 3-63 characters of a-z, 0-9, '.' and '-'."})
    command = CommandField()
    cwd = PathField(required=False, default="", allow_blank=True, trim_whitespace=False,
                                help_text="Relative to the workspace root.")
    env = serializers.DictField(child=serializers.CharField(allow_blank=True,
                                                            trim_whitespace=False),
                                required=False, default=dict)
    timeout = serializers.FloatField(required=False, default=60, min_value=0.001,
                                     max_value=MAX_TIMEOUT, help_text="Seconds (default 60).")
    stdin = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False,
                                  help_text="Text written to the command's standard input.")
    stdin_base64 = serializers.CharField(required=False, help_text="Binary stdin, base64.")
    background = serializers.BooleanField(required=False, default=False)

    def validate_env(self, env: dict[str, str]) -> dict[str, str]:
        for name, value in env.items():
            if not ENV_NAME_RE.match(name):
                raise serializers.ValidationError(f"{name!r} is not a valid variable name.")
            if "\x00" in value:
                raise serializers.ValidationError(f"The value of {name} contains a NUL byte.")
        return env

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "stdin" in attrs and "stdin_base64" in attrs:
            raise serializers.ValidationError({"stdin": ["Give stdin or stdin_base64, not both."]})
        if "stdin_base64" in attrs:
            try:
                attrs["stdin"] = base64.b64decode(attrs.pop("stdin_base64"), validate=True)
            except (binascii.Error, ValueError):
                raise serializers.ValidationError(
                    {"stdin_base64": ["This is not valid base64."]}) from None
        elif "stdin" in attrs:
            attrs["stdin"] = attrs["stdin"].encode()
        return attrs


class ExecResultSerializer(serializers.Serializer):
    exit_code = serializers.IntegerField(
        allow_null=True, help_text="Killed by signal N: 128+N. Null when the sandbox died.")
    stdout = serializers.CharField(help_text="UTF-8 text (invalid bytes replaced by U+FFFD).")
    stderr = serializers.CharField()
    stdout_base64 = serializers.CharField(
        required=False, help_text="Only when stdout is not valid UTF-8: its exact bytes.")
    stderr_base64 = serializers.CharField(required=False)
    timed_out = serializers.BooleanField()
    truncated = serializers.BooleanField(
        help_text="True when stdout or stderr exceeded EXEC_OUTPUT_MAX_BYTES and was cut.")
    duration_ms = serializers.FloatField()


class ExecStartedSerializer(serializers.Serializer):
    id = serializers.CharField()
    status = serializers.CharField()


class ExecCommandSerializer(serializers.ModelSerializer):
    command = serializers.JSONField()

    class Meta:
        model = ExecCommand
        fields = ["id", "bucket", "command", "cwd", "status", "exit_code", "pid", "started_at",
                  "finished_at", "duration_ms"]


OUTPUT = {"type": "object", "required": ["data"], "properties": {
    "data": {"type": "string", "description": "UTF-8 text (invalid bytes replaced by U+FFFD)."},
    "data_base64": {"type": "string", "description": "Only when not UTF-8: the exact bytes."},
}}

# The SSE body of /exec and /exec/{id}/logs, one schema per event (weldr_agent.schema).
EventStream = event_stream_response({
    "start": {"type": "object", "required": ["pid"],
              "properties": {"pid": {"type": "integer"}}},
    "stdout": OUTPUT,
    "stderr": OUTPUT,
    "exit": {"type": "object", "required": ["exit_code", "timed_out"], "properties": {
        "exit_code": {"type": "integer", "nullable": True},
        "timed_out": {"type": "boolean"},
        # Absent when the command's end was not seen (the agent stopped it at shutdown), null
        # when the agent restarted since.
        "duration_ms": {"type": "number", "nullable": True},
    }},
}, description="Events `start`, `stdout`/`stderr` (any number), then `exit` (always last).")
