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
