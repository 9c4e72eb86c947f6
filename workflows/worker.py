"""The agent's workflow worker: a thread pool that executes queued runs.

Start-up (a lifecycle hook) fails this agent's runs that were `running` when it stopped — their
process is gone, so they would otherwise stay "running" forever — and resubmits its queued ones.
Shutdown (runs stop between calls from its first signal on: engine._stopping_check) waits for
the running ones within the deadline and fails whatever is still running.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import close_old_connections

from workflows import engine
from workflows.models import WorkflowRun

logger = logging.getLogger("weldr.workflows.worker")

INTERRUPTED = ("The agent stopped while this run was in progress (restart or crash); "
               "its changes were not committed. Trigger the workflow again.")

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=settings.WORKFLOW_WORKERS,
                                           thread_name_prefix="workflow")
        return _executor


def _execute(run_id: str) -> None:
    close_old_connections()
    try:
        engine.run_execute(run_id)
    finally:
        close_old_connections()


def run_submit(run_id: str) -> None:
    _pool().submit(_execute, run_id)


def interrupted_runs_fail() -> int:
    """Fail this agent's runs left `running` by a previous process; returns how many."""
    runs = list(WorkflowRun.objects.filter(status=WorkflowRun.Status.RUNNING,
                                           agent_instance=settings.INSTANCE_ID))
    for run in runs:
        engine.run_fail(run, INTERRUPTED)
    return len(runs)


def worker_start() -> None:
    failed = interrupted_runs_fail()
    if failed:
        logger.warning("marked %d interrupted workflow run(s) failed", failed)
    # Queued runs never started: nothing was done, so running them now is safe.
    for run_id in WorkflowRun.objects.filter(status=WorkflowRun.Status.QUEUED,
                                             agent_instance="").values_list("id", flat=True):
        run_submit(run_id)


def worker_stop(deadline: float) -> None:
    global _executor
    # Running runs already stop between calls: lifecycle.shutting_down() is true before any
    # shutdown hook runs (engine._stopping_check).
    with _lock:
        executor, _executor = _executor, None
    if executor is not None:
        executor.shutdown(wait=False, cancel_futures=True)
        for thread in list(getattr(executor, "_threads", ())):
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
    interrupted_runs_fail()
