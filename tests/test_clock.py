"""The agent starts on a machine booted seconds ago, and with a wall clock far off.

A Fly machine boots and starts the agent within seconds, so `time.monotonic()` (which counts from
boot) is near zero: a cache or TTL that starts at 0.0 then looks fresh and answers "not probed
yet". The agent runs here in a real time namespace (`unshare --time`) whose monotonic and boot
clocks start where a freshly booted machine's do.
"""

from __future__ import annotations

import datetime as dt

import httpx
import pytest

from tests.conftest import AgentProcess
from weldr_agent import runner

pytestmark = [pytest.mark.slow, pytest.mark.django_db(databases="__all__", transaction=True)]


def since_boot() -> float:
    return float(open("/proc/uptime").read().split()[0])


def fresh_boot(seconds_after_boot: float = 2.0) -> tuple[str, ...]:
    """argv prefix: a new time namespace whose monotonic and boot clocks read ~this much."""
    offset = int(since_boot() - seconds_after_boot)
    return ("unshare", "--time", "--fork", f"--monotonic=-{offset}", f"--boottime=-{offset}")


def test_the_time_namespace_is_what_a_fresh_machine_sees():
    inside = runner.run([*fresh_boot(), "python3", "-c", "import time; print(time.monotonic())"],
                        timeout=30).stdout
    assert float(inside) < 10


def test_agent_starts_and_is_healthy_seconds_after_boot(agent_process: AgentProcess):
    # (the first /health imports the S3 and Redis clients: more than the production 0.8 s on a
    # loaded machine; a check taken as fresh from time zero answers at once, whatever the budget)
    agent_process.env["HEALTH_CHECK_TIMEOUT_SECONDS"] = "20"
    # when the agent starts with the monotonic clock near zero
    agent_process.start(prefix=fresh_boot())
    # then /health is 200: the OCI runtime was probed, not taken as "fresh" from time zero
    response = httpx.get(f"{agent_process.url}/health", timeout=30)
    assert response.status_code == 200, (response.text, agent_process.log.read_text()[-2000:])
    assert response.json()["checks"]["oci_runtime"] == "ok"


@pytest.mark.parametrize("start", ["@2021-12-06 09:00:00", "@2031-12-06 09:00:00"])
def test_agent_starts_with_the_wall_clock_years_off(agent_process: AgentProcess, start: str):
    """libfaketime starts the agent's clocks five years back or ahead (its `-f @date` form;
    it moves the monotonic clock along, and its monotonic-only opt-out breaks sleeps in this
    version): the agent starts and /health answers, whatever S3 thinks of its signatures."""
    fake = ("faketime", "-f", start)
    clock = runner.run([*fake, "python3", "-c", "import time; print(time.time())"],
                       timeout=30).stdout
    assert abs(float(clock) - dt.datetime.now(dt.UTC).timestamp()) > 365 * 86400
    agent_process.start(prefix=fake)
    assert httpx.get(f"{agent_process.url}/health/live", timeout=30).status_code == 200
    health = httpx.get(f"{agent_process.url}/health", timeout=30)
    assert health.status_code in (200, 503)
    assert health.json()["checks"]["state_db"] == "ok"
    assert health.json()["checks"]["oci_runtime"] == "ok", health.json()
    assert "Traceback" not in agent_process.log.read_text()
