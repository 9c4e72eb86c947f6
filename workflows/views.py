"""Thin views: fetch, validate, call one service, serialize."""

from __future__ import annotations

from typing import Any

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import Serializer
from rest_framework.views import APIView

from weldr_agent import access, limits
from weldr_agent.schema import event_stream_response
from weldr_agent.serializers import error_responses
from weldr_agent.sse import EventStreamNegotiation, last_event_id, sse_response
from workflows import checkpoints, services
from workflows import serializers as s
from workflows.events import EVENT_TYPES
from workflows.integrations import services as integrations
from workflows.models import Branch, Project
from workflows.sse import event_stream

# Every event of a branch carries a JSON object whose fields depend on its type (docs/workflows.md).
BRANCH_EVENTS = event_stream_response(
    {name: {"type": "object"} for name in EVENT_TYPES},
    description="The branch's events in order, each with its `id` (resume with Last-Event-ID).")
BRANCH_QUERY = [OpenApiParameter("project_id", str, required=True),
                OpenApiParameter("branch_id", str, required=True)]


def _body_and_branch(request: Request, serializer: type[Serializer]
                     ) -> tuple[dict[str, Any], Branch]:
    """The request body validated by `serializer`, and the branch its `project_id` and
    `branch_id` name (404 unless the branch is the project's)."""
    body = serializer(data=request.data)
    body.is_valid(raise_exception=True)
    branch = services.branch_get(project_id=body.validated_data["project_id"],
                                 branch_id=body.validated_data["branch_id"])
    return body.validated_data, branch


class ProjectListView(APIView):
    tenant = {"get": access.LISTS, "post": access.Objects(creates_project=True)}

    @extend_schema(responses=inline_serializer(
        "ProjectList", {"projects": s.ProjectSerializer(many=True)}))
    def get(self, request: Request) -> Response:
        projects = access.narrow(Project.objects.all(), request.user, projects="id")
        return Response({"projects": s.ProjectSerializer(projects, many=True).data})

    @extend_schema(request=s.ProjectSerializer, responses={201: s.ProjectSerializer})
    def post(self, request: Request) -> Response:
        data = s.ProjectSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        owner = getattr(request.user, "user_id", None) or data.validated_data.get("owner_id", "")
        project = services.project_create(name=data.validated_data["name"], owner_id=owner)
        return Response(s.ProjectSerializer(project).data, status=status.HTTP_201_CREATED)


class BranchListView(APIView):
    @extend_schema(responses={200: inline_serializer(
        "BranchList", {"branches": s.BranchSerializer(many=True)}), **error_responses(404)})
    def get(self, request: Request, project_id: str) -> Response:
        project = services.project_get(project_id=project_id)
        return Response({"branches": s.BranchSerializer(project.branches.all(), many=True).data})

    @extend_schema(request=s.BranchSerializer, responses={
        201: s.BranchSerializer,
        **error_responses(404, 409, e409="branch_exists / bucket_taken (another tenant's "
                                      "project names the bucket)")})
    def post(self, request: Request, project_id: str) -> Response:
        project = services.project_get(project_id=project_id)
        data = s.BranchSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.bucket_claim_check(principal=request.user, bucket=data.validated_data["bucket"])
        branch = services.branch_create(project=project, **data.validated_data)
        return Response(s.BranchSerializer(branch).data, status=status.HTTP_201_CREATED)


class TriggerView(APIView):
    tenant = access.Objects(body=("project_id",))

    @extend_schema(request=s.TriggerSerializer, responses={
        202: s.TriggerResponseSerializer, **error_responses(404, 409)})
    def post(self, request: Request) -> Response:
        data, branch = _body_and_branch(request, s.TriggerSerializer)
        text = "\n".join(p["text"] for p in data["message"]["content"])
        run = services.run_trigger(branch=branch, text=text, model=data.get("model"))
        return Response({"run_id": run.id, "status": run.status},
                        status=status.HTTP_202_ACCEPTED)


class RunListView(APIView):
    tenant = access.Objects(query=("project_id",), optional=True, lists=True)

    @extend_schema(parameters=[OpenApiParameter("project_id", str),
                               OpenApiParameter("branch_id", str)],
                   responses={200: inline_serializer(
                       "RunList", {"runs": s.RunSerializer(many=True)}), **error_responses(404)})
    def get(self, request: Request) -> Response:
        runs = services.runs_list(project_id=request.query_params.get("project_id"),
                                  branch_id=request.query_params.get("branch_id"))
        runs = access.narrow(runs, request.user, projects="branch__project_id")
        return Response({"runs": s.RunSerializer(runs[:200], many=True).data})


class RunDetailView(APIView):
    @extend_schema(responses=s.RunSerializer)
    def get(self, request: Request, run_id: str) -> Response:
        return Response(s.RunSerializer(services.run_get(run_id=run_id)).data)


class RevertView(APIView):
    tenant = access.Objects(body=("project_id",))

    @extend_schema(request=s.RevertSerializer, responses={
        200: s.RevertResponseSerializer, **error_responses(404, 409)})
    def post(self, request: Request) -> Response:
        data, branch = _body_and_branch(request, s.RevertSerializer)
        if data["mode"] == "snapshot":
            return Response(checkpoints.branch_revert_snapshot(
                branch=branch, version_id=data["version_id"]))
        version = services.branch_revert(branch=branch, version_id=data["version_id"])
        return Response({"success": True, "commit_hash": version.commit_hash,
                         "version": s.VersionSerializer(version).data})


class IntegrationListView(APIView):
    tenant = access.NOTHING  # the catalogue of integrations, the same for everyone

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        return Response({"integrations": integrations.integrations_describe()})


class InstallIntegrationsView(APIView):
    tenant = access.Objects(body=("project_id",))

    @extend_schema(request=s.InstallSerializer, responses={
        200: s.InstallResponseSerializer, **error_responses(404, 409)})
    def post(self, request: Request) -> Response:
        data, branch = _body_and_branch(request, s.InstallSerializer)
        rows = integrations.integrations_install(branch=branch, items=data["integrations"])
        installed = s.InstalledSerializer(rows, many=True).data
        body: dict[str, Any] = {"success": True, "installed_integrations": installed}
        if data["trigger_workflow"]:
            keys = ", ".join(row.key for row in rows)
            run = services.run_trigger(branch=branch, text=(
                f"The integrations {keys} were just installed. Wire them into the app."))
            body["run_id"] = run.id
        return Response(body)


class EventStreamView(EventStreamNegotiation, APIView):
    """Server-sent events of a branch; resume with Last-Event-ID or ?last_event_id=."""

    tenant = access.Objects(query=("project_id",))

    @extend_schema(parameters=[*BRANCH_QUERY, OpenApiParameter("last_event_id", int)],
                   responses={(200, "text/event-stream"): BRANCH_EVENTS,
                              **error_responses(400, 404, 429, e429="too_many_streams")})
    def get(self, request: Request) -> StreamingHttpResponse:
        branch = services.branch_get(project_id=request.query_params.get("project_id", ""),
                                     branch_id=request.query_params.get("branch_id", ""))
        last_id = last_event_id(request, query="last_event_id")
        return sse_response(limits.counted(
            principal=request.user, stream=event_stream(branch_id=branch.id, last_id=last_id)))
