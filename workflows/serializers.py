"""Input and output shapes of the workflows API (docs/api.md: Projects, workflows, events)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from weldr_agent.schema import BUCKET_SCHEMA
from weldr_agent.serializers import StrictModelSerializer, StrictSerializer
from workflows.models import Branch, Integration, Project, Version, WorkflowRun


class ProjectSerializer(StrictModelSerializer):
    class Meta:
        model = Project
        fields = ["id", "name", "owner_id", "created_at"]
        read_only_fields = ["id", "created_at"]
        extra_kwargs = {"owner_id": {"required": False}}


@extend_schema_field(BUCKET_SCHEMA)
class BucketNameField(serializers.CharField):
    """A bucket name; declared with S3's pattern so that clients (and fuzzers) know it."""


class BranchSerializer(StrictModelSerializer):
    bucket = BucketNameField(max_length=63)

    class Meta:
        model = Branch
        fields = ["id", "project_id", "name", "bucket", "created_at"]
        read_only_fields = ["id", "project_id", "created_at"]


class VersionSerializer(serializers.ModelSerializer):
    class Meta:
        model = Version
        fields = ["id", "number", "commit_hash", "description", "run_id", "created_at"]


class RunSerializer(serializers.ModelSerializer):
    project_id = serializers.CharField(source="branch.project_id")
    versions = VersionSerializer(many=True)

    class Meta:
        model = WorkflowRun
        fields = ["id", "project_id", "branch_id", "status", "current_step", "model", "error",
                  "input_tokens", "output_tokens", "tool_calls", "created_at", "started_at",
                  "finished_at", "versions"]


class TextPartSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=["text"])
    text = serializers.CharField(allow_blank=False, trim_whitespace=False)


class TriggerMessageSerializer(serializers.Serializer):
    content = TextPartSerializer(many=True, allow_empty=False)


class BranchRefSerializer(StrictSerializer):
    project_id = serializers.CharField(max_length=64)
    branch_id = serializers.CharField(max_length=64)


class TriggerSerializer(BranchRefSerializer):
    message = TriggerMessageSerializer()
    model = serializers.RegexField(r"^[a-z0-9-]+/\S+$", required=False, max_length=200,
                                   help_text='"anthropic/…", "openai/…" or "google/…".')


class TriggerResponseSerializer(serializers.Serializer):
    run_id = serializers.CharField()
    status = serializers.CharField()


class RevertSerializer(BranchRefSerializer):
    version_id = serializers.CharField(max_length=64)
    # --- snapshots (issue #15, mounts/snapshots.py) ---
    mode = serializers.ChoiceField(
        choices=["git", "snapshot"], default="git",
        help_text="git: a new commit with the version's tree. snapshot: the whole workspace as "
                  "it was before the run that made the version (its checkpoint), untracked "
                  "and ignored files included; answers like a snapshot restore.")


class RevertResponseSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    commit_hash = serializers.CharField()
    version = VersionSerializer()


class IntegrationItemSerializer(serializers.Serializer):
    key = serializers.CharField(max_length=64)
    options = serializers.DictField(required=False, default=dict)


class InstallSerializer(BranchRefSerializer):
    integrations = IntegrationItemSerializer(many=True, allow_empty=False)
    trigger_workflow = serializers.BooleanField(required=False, default=False)


class InstalledSerializer(serializers.ModelSerializer):
    class Meta:
        model = Integration
        fields = ["id", "key", "category", "status", "options"]


class InstallResponseSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    installed_integrations = InstalledSerializer(many=True)
    run_id = serializers.CharField(required=False)
