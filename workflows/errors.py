"""Typed errors of the workflows app; the one exception handler renders them (weldr_agent.errors).

The caller's mistakes (404 for an unknown project, branch, run or version; 409 while a run holds
the branch; 400 for an unknown integration or bad options) are separate from the machine's
failures (500: an install or git in the sandbox failed).
"""

from __future__ import annotations

from rest_framework import status

from weldr_agent.errors import APIError, ConflictError, NotFoundError, SystemCommandError


class ProjectNotFound(NotFoundError):
    default_code = "project_not_found"
    default_detail = "No such project."


class BranchNotFound(NotFoundError):
    default_code = "branch_not_found"
    default_detail = "No such branch in this project."


class RunNotFound(NotFoundError):
    default_code = "run_not_found"
    default_detail = "No such run."


class VersionNotFound(NotFoundError):
    default_code = "version_not_found"
    default_detail = "No such version on this branch."


class RunActive(ConflictError):
    default_code = "run_active"
    default_detail = "A workflow run is already active on this branch; wait for it to finish."


class BranchExists(ConflictError):
    default_code = "branch_exists"
    default_detail = "The project already has a branch with this name."


class BucketTaken(ConflictError):
    default_code = "bucket_taken"
    default_detail = "Another tenant's project names this bucket; choose another name."


class UnknownIntegration(APIError):
    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "unknown_integration"
    default_detail = "No integration with this key; see GET /integrations."


class InvalidIntegrationOptions(APIError):
    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "invalid_options"
    default_detail = "The integration's options are invalid."


class IntegrationFailed(APIError):
    status_code = status.HTTP_500_INTERNAL_SERVER_ERROR
    default_code = "integration_failed"
    default_detail = "Installing the integration failed; the workspace was left as it was."


class GitFailed(SystemCommandError):
    """Git in the bucket's sandbox failed or timed out (gitrepo.py)."""

    default_code = "git_failed"
