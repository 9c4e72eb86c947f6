"""Shared project data: projects and branches (PostgreSQL in production)."""

from __future__ import annotations

import uuid

from django.db import models


def new_id() -> str:
    return uuid.uuid4().hex


class Project(models.Model):
    id = models.CharField(primary_key=True, max_length=64, default=new_id)
    name = models.CharField(max_length=200)
    # The Better Auth user who owns the project (`"user".id`); the agent checks it against
    # PROJECT_ID for platform users.
    owner_id = models.CharField(max_length=64, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return self.name


class Branch(models.Model):
    id = models.CharField(primary_key=True, max_length=64, default=new_id)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="branches")
    name = models.CharField(max_length=200)
    bucket = models.CharField(max_length=63, help_text="The S3 bucket holding the branch's code.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="branch_name_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.project_id}/{self.name}"


class Version(models.Model):
    """A git commit in the branch's workspace, numbered 1, 2, 3… per branch."""

    id = models.CharField(primary_key=True, max_length=64, default=new_id)
    branch = models.ForeignKey(Branch, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    commit_hash = models.CharField(max_length=64)
    description = models.TextField(blank=True)
    run = models.ForeignKey("WorkflowRun", null=True, blank=True, on_delete=models.SET_NULL,
                            related_name="versions")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["branch", "number"]
        constraints = [
            models.UniqueConstraint(fields=["branch", "number"], name="version_number_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.branch_id} v{self.number}"


class Message(models.Model):
    """One entry of a branch's conversation with the model."""

    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"
        TOOL = "tool"

    id = models.CharField(primary_key=True, max_length=64, default=new_id)
    branch = models.ForeignKey(Branch, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.JSONField(default=list)
    run = models.ForeignKey("WorkflowRun", null=True, blank=True, on_delete=models.SET_NULL,
                            related_name="messages")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]


ACTIVE_RUN_STATUSES = ("queued", "running")


class WorkflowRun(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        COMPLETED = "completed"
        FAILED = "failed"

    class Step(models.TextChoices):
        PLANNING = "planning"
        CODING = "coding"
        FINALIZING = "finalizing"

    id = models.CharField(primary_key=True, max_length=64, default=new_id)
    branch = models.ForeignKey(Branch, on_delete=models.CASCADE, related_name="runs")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    current_step = models.CharField(max_length=16, choices=Step.choices, blank=True)
    model = models.CharField(max_length=200)
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    tool_calls = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    # The agent (settings.INSTANCE_ID) executing the run: at start-up an agent fails only its
    # own interrupted runs, never those of another agent sharing the database.
    agent_instance = models.CharField(max_length=16, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            # One active run per branch, enforced by the database: two triggers racing for a
            # branch cannot both insert (the loser gets an IntegrityError, answered with 409).
            models.UniqueConstraint(
                fields=["branch"], condition=models.Q(status__in=ACTIVE_RUN_STATUSES),
                name="one_active_run_per_branch",
            ),
        ]

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_RUN_STATUSES


class EventCounter(models.Model):
    """The last event number of a branch; incremented under a row lock to number events."""

    branch = models.OneToOneField(Branch, primary_key=True, on_delete=models.CASCADE,
                                  related_name="event_counter")
    last_seq = models.PositiveBigIntegerField(default=0)


class Event(models.Model):
    id = models.BigAutoField(primary_key=True)
    branch = models.ForeignKey(Branch, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveBigIntegerField()
    type = models.CharField(max_length=40)
    data = models.JSONField(default=dict)
    run = models.ForeignKey(WorkflowRun, null=True, blank=True, on_delete=models.SET_NULL,
                            related_name="events")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["branch", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["branch", "seq"], name="event_seq_unique"),
        ]

    def as_message(self) -> dict:
        """The wire shape shared by SSE, websockets and the channel layer."""
        return {"id": self.seq, "type": self.type, "data": self.data}


class Integration(models.Model):
    class Status(models.TextChoices):
        INSTALLING = "installing"
        INSTALLED = "installed"
        FAILED = "failed"

    id = models.CharField(primary_key=True, max_length=64, default=new_id)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="integrations")
    branch = models.ForeignKey(Branch, on_delete=models.CASCADE, related_name="integrations")
    key = models.CharField(max_length=64)
    category = models.CharField(max_length=64)
    options = models.JSONField(default=dict)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.INSTALLING)
    error = models.TextField(blank=True)
    version = models.ForeignKey(Version, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(fields=["branch", "key"], name="integration_key_unique"),
        ]
