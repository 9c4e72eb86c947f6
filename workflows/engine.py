"""One workflow run: planning → coding (the tool loop) → finalizing (a new version).

Runs in a worker thread (worker.py). Every state change is an event (events.event_publish).
A step has a deadline (WORKFLOW_STEP_TIMEOUT_SECONDS); provider calls get the time left, and
transient provider errors (rate limits, 5xx) are retried with exponential backoff within it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import close_old_connections
from django.db.models import F
from django.utils import timezone
from django.utils.module_loading import import_string

from mounts.snapshots import checkpoint_before_run
from weldr_agent import lifecycle
from workflows import gitrepo
from workflows.branches import branch_workspace, version_record
from workflows.events import event_publish
from workflows.integrations.services import integration_apply
from workflows.models import Message, WorkflowRun
from workflows.providers.base import (
    AssistantMessage,
    Provider,
    ProviderError,
    ToolResultsMessage,
    Turn,
    UnknownModel,
    UserMessage,
)
from workflows.providers.base import Message as ProviderMessage
from workflows.providers.registry import get_provider, key_check
from workflows.tools import ToolContext, tool_execute, tool_specs

logger = logging.getLogger("weldr.workflows.engine")

PLANNING_PROMPT = (
    "You are the planning step of a coding agent working on a web app in a git repository. "
    "Read the user's request and answer with a short numbered plan of the changes to make. "
    "Do not write code yet."
)
CODING_PROMPT = (
    "You are a coding agent. Carry out the plan by calling the tools: read before you edit, keep "
    "paths relative to the project root, run commands to check your work. When the work is "
    "complete, call `done` with a one-line summary."
)


class StepTimeout(Exception):
    pass


class AgentStopping(Exception):
    pass


def _stopping_check() -> None:
    """From the first signal of a shutdown (lifecycle), a run stops between calls and fails
    with a clear message rather than being cut off mid-tool by the process exit."""
    if lifecycle.shutting_down():
        raise AgentStopping("The agent stopped during the run; trigger it again.")



def provider_resolve(model: str) -> tuple[Provider, str, int]:
    """The adapter, the bare model name, and how often the engine retries transient errors.

    The registry's adapters retry transient errors themselves (providers/retry.py), so the
    engine does not retry them again; adapters plugged in by WORKFLOW_EXTRA_PROVIDERS get the
    engine's retries (WORKFLOW_PROVIDER_RETRIES).
    """
    prefix, _, name = model.partition("/")
    extra = settings.WORKFLOW_EXTRA_PROVIDERS.get(prefix)
    if extra:
        return import_string(extra)(), name, settings.WORKFLOW_PROVIDER_RETRIES
    # a missing key fails the run before the SDK is imported.
    key_check(model)
    provider, name = get_provider(model)
    return provider, name, 0


@dataclass
class Step:
    name: str
    deadline: float

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise StepTimeout(f"The {self.name} step took longer than "
                              f"{settings.WORKFLOW_STEP_TIMEOUT_SECONDS}s.")
        return left


@dataclass
class RunState:
    run: WorkflowRun
    provider: Provider
    model: str
    retries: int = 0
    step: Step | None = None
    tool_calls: int = 0
    texts: list[str] = field(default_factory=list)
    # Where the run's time went, logged at its end: the agent's own overhead is the rest.
    provider_seconds: float = 0.0
    tool_seconds: float = 0.0

    def emit(self, type: str, data: dict[str, Any]) -> None:
        """Publish without waiting for the database: the publisher keeps the order, and the
        run's own start and end (event_publish, waiting) come after everything emitted."""
        event_publish(branch=self.run.branch_id, type=type, run=self.run,
                      data={"run_id": self.run.id, **data}, wait=False)

    def step_start(self, name: str) -> Step:
        _stopping_check()
        self.step = Step(name, time.monotonic() + settings.WORKFLOW_STEP_TIMEOUT_SECONDS)
        WorkflowRun.objects.filter(id=self.run.id).update(current_step=name)
        self.emit("step.started", {"step": name})
        return self.step

    def complete(self, *, system: str, messages: list[ProviderMessage], tools: bool) -> Turn:
        """One model turn, streamed as message.delta events, retried when transient."""
        assert self.step is not None
        step = self.step.name
        attempt = 0
        started = time.monotonic()
        while True:
            try:
                # no pooled connection held while the model thinks
                close_old_connections()
                turn = self.provider.complete(
                    model=self.model, system=system, messages=messages,
                    tools=tool_specs() if tools else [],
                    on_text=lambda delta: self.emit("message.delta",
                                                    {"step": step, "text": delta}),
                    timeout=self.step.remaining(),
                )
                break
            except ProviderError as error:
                attempt += 1
                if not error.transient or attempt > self.retries:
                    raise
                pause = settings.WORKFLOW_RETRY_BACKOFF_SECONDS * 2 ** (attempt - 1)
                logger.warning("run %s: transient provider error (%s); retry %d in %.1fs",
                               self.run.id, error, attempt, pause)
                if pause >= self.step.remaining():
                    raise
                time.sleep(pause)
        self.provider_seconds += time.monotonic() - started
        WorkflowRun.objects.filter(id=self.run.id).update(
            input_tokens=F("input_tokens") + turn.usage.input_tokens,
            output_tokens=F("output_tokens") + turn.usage.output_tokens,
        )
        Message.objects.create(branch_id=self.run.branch_id, run=self.run,
                               role=Message.Role.ASSISTANT, content=_assistant_content(turn))
        return turn


def _assistant_content(turn: Turn) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = [{"type": "text", "text": turn.text}] if turn.text else []
    content.extend({"type": "tool_call", "id": c.id, "name": c.name, "arguments": c.arguments}
                   for c in turn.tool_calls)
    return content


def user_text(run: WorkflowRun) -> str:
    message = run.messages.filter(role=Message.Role.USER).order_by("created_at").first()
    if message is None:
        return ""
    return "\n".join(part.get("text", "") for part in message.content
                     if isinstance(part, dict) and part.get("type") == "text")


def plan_step(state: RunState, request: str) -> str:
    state.step_start(WorkflowRun.Step.PLANNING)
    turn = state.complete(system=PLANNING_PROMPT, messages=[UserMessage(request)], tools=False)
    return turn.text


def coding_step(state: RunState, context: ToolContext, request: str, plan: str) -> None:
    step = state.step_start(WorkflowRun.Step.CODING)
    prompt = f"{request}\n\nThe plan:\n{plan}" if plan else request
    messages: list[ProviderMessage] = [UserMessage(prompt)]
    while not context.done:
        turn = state.complete(system=CODING_PROMPT, messages=messages, tools=True)
        messages.append(AssistantMessage(turn.text, list(turn.tool_calls)))
        if turn.text:
            state.texts.append(turn.text)
        if not turn.tool_calls:
            return
        results = []
        for call in turn.tool_calls:
            step.remaining()
            _stopping_check()
            state.emit("tool.call", {"call_id": call.id, "name": call.name,
                                     "arguments": call.arguments if call.arguments is not None
                                     else call.raw_arguments})
            # no pooled connection held while a tool runs (a command may take minutes)
            close_old_connections()
            started = time.monotonic()
            result = tool_execute(context, call)
            state.tool_seconds += time.monotonic() - started
            state.tool_calls += 1
            state.emit("tool.result", {"call_id": call.id, "name": call.name,
                                       "content": result.content, "is_error": result.is_error})
            results.append(result)
        WorkflowRun.objects.filter(id=state.run.id).update(tool_calls=state.tool_calls)
        messages.append(ToolResultsMessage(results))
        if state.tool_calls >= settings.WORKFLOW_MAX_TOOL_CALLS:
            logger.warning("run %s reached WORKFLOW_MAX_TOOL_CALLS", state.run.id)
            return


def describe(context: ToolContext, plan: str, texts: list[str], changed: list[str]) -> str:
    """A version's description: the model's summary, else its words, else the files changed."""
    for candidate in (context.summary, *reversed(texts), plan):
        line = next((part.strip() for part in (candidate or "").splitlines() if part.strip()), "")
        if line:
            return line[:200]
    shown = ", ".join(sorted(set(changed))[:5])
    return f"Changed {len(set(changed))} file(s): {shown}"[:200]


def finalize_step(state: RunState, context: ToolContext, plan: str) -> dict[str, Any]:
    state.step_start(WorkflowRun.Step.FINALIZING)
    repo = gitrepo.Repo(bucket=context.bucket, workspace=context.workspace)
    changed = gitrepo.changed_paths(repo)
    description = describe(context, plan, state.texts, changed)
    commit = gitrepo.commit_all(repo, description)
    if commit is None:
        return {"version_id": None}
    version = version_record(branch=state.run.branch, commit_hash=commit,
                             description=description, run=state.run)
    return {"version_id": version.id, "commit_hash": commit}


def run_fail(run: WorkflowRun, error: str) -> None:
    """Mark a run failed (once) and say so on the event stream."""
    updated = WorkflowRun.objects.filter(id=run.id, status__in=("queued", "running")).update(
        status=WorkflowRun.Status.FAILED, error=error[:4000], finished_at=timezone.now())
    if updated:
        event_publish(branch=run.branch_id, type="run.failed", run=run,
                      data={"run_id": run.id, "error": error[:4000]})


def run_execute(run_id: str) -> None:
    """Claim a queued run and execute it to completion or failure."""
    claimed = WorkflowRun.objects.filter(id=run_id, status=WorkflowRun.Status.QUEUED).update(
        status=WorkflowRun.Status.RUNNING, started_at=timezone.now(),
        agent_instance=settings.INSTANCE_ID)
    if not claimed:
        return
    run = WorkflowRun.objects.select_related("branch").get(id=run_id)
    started = time.monotonic()
    try:
        event_publish(branch=run.branch_id, type="run.started", run=run,
                      data={"run_id": run.id, "model": run.model})
        provider, model, retries = provider_resolve(run.model)
        state = RunState(run=run, provider=provider, model=model, retries=retries)
        workspace = branch_workspace(run.branch)
        # --- snapshots (issue #15): the whole workspace as it was before this run ---
        checkpoint_before_run(bucket=run.branch.bucket, run_id=run.id, branch_id=run.branch_id)
        gitrepo.repo_ensure(gitrepo.Repo(bucket=run.branch.bucket, workspace=workspace))
        context = ToolContext(
            workspace=workspace, bucket=run.branch.bucket,
            on_file_changed=lambda path, change: state.emit("file.changed",
                                                            {"path": path, "change": change}),
            on_integration=lambda key, options: _integration_from_run(run, key, options),
        )
        request = user_text(run)
        plan = plan_step(state, request)
        coding_step(state, context, request, plan)
        outcome = finalize_step(state, context, plan)
    except Exception as error:  # the run fails cleanly, whatever went wrong
        logger.exception("run %s failed", run_id)
        run_fail(run, _error_text(error))
        return
    completed = WorkflowRun.objects.filter(id=run.id, status=WorkflowRun.Status.RUNNING).update(
        status=WorkflowRun.Status.COMPLETED, current_step="", finished_at=timezone.now())
    if not completed:  # failed meanwhile by the shutdown hook
        return
    event_publish(branch=run.branch_id, type="run.completed", run=run,
                  data={"run_id": run.id, "tool_calls": state.tool_calls, **outcome})
    logger.info("run %s completed in %.3f s: %.3f s in the provider, %.3f s in %d tool call(s)",
                run.id, time.monotonic() - started, state.provider_seconds, state.tool_seconds,
                state.tool_calls)


def _error_text(error: Exception) -> str:
    if isinstance(error, ProviderError):
        return f"The model provider failed: {error}"
    if isinstance(error, UnknownModel):
        return f"Unknown model: {error}"
    return str(error) or type(error).__name__


def _integration_from_run(run: WorkflowRun, key: str, options: dict[str, Any]) -> str:
    """add_integration inside a run: files and env now; the run's version commits them."""
    row = integration_apply(branch=run.branch, key=key, options=options, commit=False)
    return f"Integration {key} {row.status}."
