"""POST /exec and the background command endpoints.

These views are async: a command's output is streamed from the event loop while it runs, and a
waiting command never holds the one thread that serves Django's sync views. Authentication and
permissions still go through DRF (run in that thread, they are quick).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from typing import Any

from django.http import HttpResponse, StreamingHttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from commands import argv, background
from commands.execution import CommandSpec, Event
from commands.output import exec_frames, text_fields
from commands.serializers import (
    EventStream,
    ExecCommandSerializer,
    ExecRequestSerializer,
    ExecResultSerializer,
    ExecStartedSerializer,
)
from commands.services import exec_collect, exec_start, exec_stream
from mounts import paths
from weldr_agent import access, limits
from weldr_agent.asyncdb import db_sync_to_async
from weldr_agent.serializers import error_responses
from weldr_agent.sse import EventStreamRenderer, last_event_id, sse_response

ERRORS = error_responses(
    400, 404, 409, 429,
    e400="invalid / invalid_path", e404="no_exec", e409="not_mounted",
    e429="too_many_commands (EXEC_MAX_CONCURRENT running on this bucket) / too_many_streams "
         "(STREAMS_PER_PRINCIPAL open event streams)",
)


class AsyncAPIView(APIView):
    """An APIView whose handlers are coroutines; DRF's auth, errors and rendering still apply."""

    renderer_classes = [JSONRenderer, EventStreamRenderer]

    async def dispatch(self, request: Any, *args: Any, **kwargs: Any) -> HttpResponse:
        self.args, self.kwargs = args, kwargs
        request = self.initialize_request(request, *args, **kwargs)
        self.request = request
        self.headers = self.default_response_headers
        try:
            # One trip to a database thread for authentication, permissions and `initial`'s
            # extra work (database reads); everything else stays on the event loop.
            await db_sync_to_async(self.initial)(request, *args, **kwargs)
            handler = getattr(self, request.method.lower(), self.http_method_not_allowed)
            response = handler(request, *args, **kwargs)
            # DRF's own handlers (OPTIONS, 405) are plain methods; ours are coroutines.
            if inspect.isawaitable(response):
                response = await response
        except Exception as exc:
            # Errors are JSON even when the client asked for an event stream.
            request.accepted_renderer = JSONRenderer()
            request.accepted_media_type = "application/json"
            response = self.handle_exception(exc)
        response = self.finalize_response(request, response, *args, **kwargs)
        if isinstance(response, Response):
            # Rendered here: Django would otherwise render it with one more thread hop.
            rendered = HttpResponse(response.rendered_content, status=response.status_code)
            if "Content-Type" not in response:  # 204
                del rendered["Content-Type"]
            for name, value in response.items():
                rendered[name] = value
            response = rendered
        self.response = response
        return response

    def wants_events(self, request: Request) -> bool:
        return request.accepted_renderer.media_type == EventStreamRenderer.media_type


def event_stream(events: AsyncIterator[Event], *, slot: limits.StreamSlot, first_id: int = 0,
                 before: list[Event] | None = None) -> StreamingHttpResponse:
    return sse_response(slot.wrap(exec_frames(events, first_id=first_id, before=before or ())))


class ExecView(AsyncAPIView):
    tenant = {"post": access.Objects(body=("bucket",))}

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        if request.method != "POST":
            return
        serializer = ExecRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        workspace = paths.workspace(data["bucket"])
        self.data = data
        self.spec = CommandSpec(
            bucket=data["bucket"], workspace=workspace,
            argv=argv.command_argv(data["command"]),
            cwd=paths.directory_beneath(workspace, data["cwd"]),
            env=argv.command_env(data["env"]), timeout=data["timeout"],
            stdin=data.get("stdin"))

    @extend_schema(
        summary="Run a command in the bucket's sandbox",
        description=(
            "Runs `command` in the bucket's sandbox (the preview's isolation: read-only system, "
            "the workspace read-write, private /tmp, no network to the host, non-root, limits). "
            "JSON: waits and returns the result, stdout and stderr capped at "
            "EXEC_OUTPUT_MAX_BYTES each. `Accept: text/event-stream`: events `start` {pid}, "
            "`stdout`/`stderr` {data, data_base64 when not UTF-8}, `exit` {exit_code, "
            "timed_out, duration_ms} as they happen; hanging up kills the command. "
            "`background: true`: 202 at once; see /exec/{id}."),
        request=ExecRequestSerializer,
        responses={(200, "application/json"): ExecResultSerializer,
                   (200, "text/event-stream"): EventStream,
                   (202, "application/json"): ExecStartedSerializer, **ERRORS},
    )
    async def post(self, request: Request) -> HttpResponse:
        data, spec = self.data, self.spec
        # Taken before the command starts: a refused stream starts nothing.
        slot = None if data["background"] or not self.wants_events(request) else \
            limits.stream_slot_take(principal=request.user)
        execution = await exec_start(spec=spec)
        if data["background"]:
            row = await background.exec_background_start(execution=execution,
                                                              command=data["command"])
            return Response({"id": row.id, "status": row.status}, status=202)
        if slot is not None:
            return event_stream(exec_stream(execution=execution), slot=slot)
        collected = await exec_collect(execution=execution)
        body = {**text_fields(bytes(collected.stdout), "stdout"),
                **text_fields(bytes(collected.stderr), "stderr"),
                "timed_out": collected.exit["timed_out"], "truncated": collected.truncated,
                "exit_code": collected.exit["exit_code"],
                "duration_ms": collected.exit["duration_ms"]}
        return Response(body)


class ExecDetailView(AsyncAPIView):
    # A status and a kill: JSON only, so the document does not offer an event stream here.
    renderer_classes = [JSONRenderer]

    @extend_schema(summary="A background command's status",
                   responses={200: ExecCommandSerializer, **ERRORS})
    async def get(self, request: Request, exec_id: str) -> Response:
        row = await db_sync_to_async(background.exec_get)(exec_id=exec_id)
        return Response(ExecCommandSerializer(row).data)

    @extend_schema(summary="Kill a background command (its whole process tree)",
                   responses={204: None, **ERRORS})
    async def delete(self, request: Request, exec_id: str) -> Response:
        await background.exec_kill(exec_id=exec_id)
        return Response(status=204)


class ExecLogsView(AsyncAPIView):
    @extend_schema(
        summary="Follow a background command's output (SSE)",
        description=("Replays the output so far, then follows until `exit`. Resume with "
                     "`Last-Event-ID`. Each stream is kept up to EXEC_OUTPUT_MAX_BYTES."),
        responses={(200, "text/event-stream"): EventStream, **ERRORS})
    async def get(self, request: Request, exec_id: str) -> HttpResponse:
        row = await db_sync_to_async(background.exec_get)(exec_id=exec_id)
        log = background.exec_log(exec_id=exec_id)
        last = last_event_id(request, strict=False)
        start = 0 if last is None else last + 1
        slot = limits.stream_slot_take(principal=request.user)
        if log is None:
            # Not seen by this process (the agent restarted): only the outcome is known.
            events = _single(Event("exit", info={"exit_code": row.exit_code, "timed_out":
                                                 row.status == "timed_out",
                                                 "duration_ms": row.duration_ms}))
            return event_stream(events, slot=slot)
        return event_stream(_follow(log, start), slot=slot, first_id=start,
                            before=log.events[:start])


async def _follow(log: background.Log, start: int) -> AsyncIterator[Event]:
    async for _, event in log.follow(start):
        yield event


async def _single(event: Event) -> AsyncIterator[Event]:
    yield event


