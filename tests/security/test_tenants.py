"""Tenants (docs/security.md, "Tenants"): a principal touches only its own projects and buckets.

One real agent (`manage.py serve`) for the module, on a PostgreSQL database of its own whose
Better Auth tables the real `better-auth` package made (as deployed, tests/auth). Two users sign
up; each makes a project whose branch names its own bucket, mounts that bucket for real (JuiceFS
over the test S3 server), writes a file, starts a background command and triggers a run. Then
every operation of /openapi.json (tests/security/tenants.py) is tried in both directions: on the
other's objects it must answer exactly what it answers for objects that exist nowhere (404, the
same body), on one's own it must get through. Scoped agent tokens (a project, a bucket,
read-only) likewise; lists show only what the caller may see; the events websocket too.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from tests.auth.conftest import (
    DEPLOYED,
    BetterAuth,
    SignedUp,
    better_auth_server,
    new_databases,
    node,
)
from tests.conftest import running_agent
from tests.security.tenants import (
    LISTS,
    NO_TENANT_OBJECT,
    OPERATIONS,
    Answer,
    Operation,
    Tenant,
    normalised,
)
from weldr_agent.runner import CommandError

pytestmark = pytest.mark.timeout(900)

HELLO = b"hello from the owner"


@dataclass
class World:
    agent: object
    platform: BetterAuth
    users: dict[str, SignedUp]
    tenants: dict[str, Tenant]
    clients: dict[str, httpx.Client]
    scripts: Path

    def client(self, headers: dict[str, str]) -> httpx.Client:
        client = httpx.Client(base_url=self.agent.url, headers=headers, timeout=180)
        self.clients[secrets.token_hex(4)] = client
        return client


def _ok(response: httpx.Response, *statuses: int) -> dict:
    assert response.status_code in (statuses or (200, 201)), response.text
    return response.json()


def _tenant(http: httpx.Client, name: str) -> Tenant:
    """A user's project, its branch naming a fresh bucket, the bucket really mounted, a file in
    it, a background command running in its sandbox and a run of the branch."""
    project = _ok(http.post("/projects", json={"name": name}))["id"]
    bucket = f"tn-{name}-{secrets.token_hex(4)}"
    branch = _ok(http.post(f"/projects/{project}/branches",
                           json={"name": "main", "bucket": bucket}))["id"]
    _ok(http.post("/mounts", json={"bucket": bucket}))
    _ok(http.put(f"/files/{bucket}/content", params={"path": "hello.txt"}, content=HELLO))
    exec_id = _ok(http.post("/exec", json={"bucket": bucket, "command": "sleep 600",
                                           "background": True}), 202)["id"]
    run_id = _ok(http.post("/trigger", json={
        "project_id": project, "branch_id": branch, "model": "scripted/done",
        "message": {"content": [{"type": "text", "text": "hello"}]}}), 202)["run_id"]
    return Tenant(project=project, branch=branch, bucket=bucket, exec_id=exec_id, run_id=run_id)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("tenants")
    scripts = tmp / "scripts"
    scripts.mkdir()
    scripts.chmod(0o755)
    (scripts / "done.json").write_text('{"turns": [{"text": "done"}]}')
    with new_databases(1) as (database,):
        node("--migrate", database=database, config=DEPLOYED)
        with better_auth_server(database, tmp / "better-auth.log", DEPLOYED) as platform:
            agents = running_agent(
                tmp, DATABASE_URL=database, BETTER_AUTH_URL=platform.url,
                BETTER_AUTH_CREATE_TABLES="0", PREVIEW_WARM_POOL="0",
                WORKFLOW_EXTRA_PROVIDERS="scripted=tests.workflows.scripted.ScriptedProvider",
                WELDR_SCRIPTED_DIR=str(scripts), **DEPLOYED)
            agent = next(agents)
            world = World(agent, platform, {}, {}, {}, scripts)
            try:
                for name in ("a", "b"):
                    user = platform.sign_up()
                    world.users[name] = user
                    http = world.client({"Authorization": f"Bearer {user.token}"})
                    world.clients[name] = http
                    world.tenants[name] = _tenant(http, name)
                yield world
            finally:
                for name, tenant in world.tenants.items():
                    world.clients[name].post("/mounts/unmount",
                                             json={"bucket": tenant.bucket, "force": True})
                for client in world.clients.values():
                    client.close()
                agents.close()


def _token(world: World, *args: str) -> httpx.Client:
    output = world.agent.manage("create_api_token", "--name", f"t{secrets.token_hex(4)}", *args)
    return world.client({"Authorization": f"Bearer {output.stdout.strip().splitlines()[-1]}"})


@dataclass
class Principal:
    """A caller, its own tenant, and what of it the rule lets it reach."""

    name: str
    client: httpx.Client
    own: str
    reaches: tuple[str, ...] = ("project", "bucket")
    read_only: bool = False


@pytest.fixture(scope="module")
def users(world: World) -> dict[str, Principal]:
    return {"user a": Principal("user a", world.clients["a"], "a"),
            "user b": Principal("user b", world.clients["b"], "b")}


@pytest.fixture(scope="module")
def tokens(world: World) -> dict[str, Principal]:
    a, b = world.tenants["a"], world.tenants["b"]
    return {
        "token scoped to project a": Principal(
            "token scoped to project a", _token(world, "--project", a.project), "a"),
        "token scoped to bucket b": Principal(
            "token scoped to bucket b", _token(world, "--bucket", b.bucket), "b",
            reaches=("bucket",)),
        "read-only token of project a": Principal(
            "read-only token of project a", _token(world, "--project", a.project, "--read-only"),
            "a", read_only=True),
    }


@pytest.fixture(scope="module")
def principals(users: dict[str, Principal], tokens: dict[str, Principal]) -> dict[str, Principal]:
    return {**users, **tokens}


PRINCIPALS = ["user a", "user b", "token scoped to project a", "token scoped to bucket b",
              "read-only token of project a"]


def _principal(request: pytest.FixtureRequest, name: str) -> Principal:
    """The named principal; tokens only when asked for (the users' tests need no scopes)."""
    group = "users" if name.startswith("user") else "tokens"
    return request.getfixturevalue(group)[name]


def _other(name: str) -> str:
    return "b" if name == "a" else "a"


def _refusals(world: World, principal: Principal, tenant_name: str,
              operations: list[Operation]) -> list[str]:
    """Each operation on `tenant_name`'s objects must answer what it answers for objects that
    exist nowhere; the mismatches, described."""
    tenant, missing = world.tenants[tenant_name], Tenant.missing()
    wrong = []
    for operation in operations:
        refused = operation.call(principal.client, tenant)
        absent = operation.call(principal.client, missing)
        if normalised(refused, tenant) != normalised(absent, missing) or refused.status == 200:
            wrong.append(f"{operation.key}: {refused.status} {refused.body} "
                         f"(missing: {absent.status} {absent.body})")
    return wrong


# ---------------------------------------------------------------- coverage


def test_every_operation_of_the_api_is_in_the_matrix(world):
    document = httpx.get(f"{world.agent.url}/openapi.json", timeout=30).json()
    operations = {f"{method.upper()} {path}" for path, item in document["paths"].items()
                  for method in item if method in ("get", "post", "put", "patch", "delete")}
    covered = {op.key for op in OPERATIONS} | set(LISTS) | set(NO_TENANT_OBJECT)
    assert operations - covered == set(), "add these operations to tests/security/tenants.py"
    assert covered - operations == set(), "the matrix names operations the API does not have"


# ---------------------------------------------------------------- refused = missing


@pytest.mark.parametrize("name", PRINCIPALS)
def test_nobody_touches_another_tenants_objects(world, request, name):
    principal = _principal(request, name)
    wrong = _refusals(world, principal, _other(principal.own), OPERATIONS)
    assert wrong == [], "\n".join(wrong)


def test_a_bucket_token_does_not_reach_the_project_naming_its_bucket(world, tokens):
    projects = [op for op in OPERATIONS if op.kind == "project"]
    wrong = _refusals(world, tokens["token scoped to bucket b"], "b", projects)
    assert wrong == [], "\n".join(wrong)


def test_refused_attempts_changed_nothing(world):
    # given every refused write of the tests above (run first), then the owners look
    for name, tenant in world.tenants.items():
        http = world.clients[name]
        assert http.get(f"/files/{tenant.bucket}/content",
                        params={"path": "hello.txt"}).content == HELLO
        assert http.get(f"/mounts/{tenant.bucket}").json()["status"] == "mounted"
        assert http.get(f"/exec/{tenant.exec_id}").json()["status"] == "running"
        assert http.get(f"/mounts/{tenant.bucket}/egress").json()["source"] == "default"
        names = {e["name"] for e in http.get(f"/files/{tenant.bucket}").json()["entries"]}
        assert "scratch.txt" not in names, names


def test_every_kind_of_user_credential_is_held_to_the_rule(world):
    user, b = world.users["a"], world.tenants["b"]
    credentials = {
        "cookie": {"Cookie": f"weldr.session_token={user.cookie}"},
        "jwt": {"Authorization": f"Bearer {world.platform.jwt(user.token)}"},
        "api key": {"x-api-key": world.platform.api_key(user.user_id)},
    }
    sample = [op for op in OPERATIONS if op.safe][:8]
    for kind, headers in credentials.items():
        principal = Principal(kind, world.client(headers), "a")
        wrong = _refusals(world, principal, "b", sample)
        assert wrong == [], f"{kind}:\n" + "\n".join(wrong)
        assert b.project not in LISTS["GET /projects"][1](principal.client), kind


def test_a_branch_cannot_name_another_tenants_bucket(world):
    a, b = world.tenants["a"], world.tenants["b"]
    response = world.clients["a"].post(f"/projects/{a.project}/branches",
                                       json={"name": "steal", "bucket": b.bucket})
    assert (response.status_code, response.json()["code"]) == (409, "bucket_taken")
    # so A still cannot reach B's bucket
    assert world.clients["a"].get(f"/files/{b.bucket}").status_code == 404


# ---------------------------------------------------------------- lists


@pytest.mark.parametrize("name", PRINCIPALS)
def test_lists_show_only_what_the_caller_may_see(world, request, name):
    principal = _principal(request, name)
    own, other = world.tenants[principal.own], world.tenants[_other(principal.own)]
    for key, (kind, listed) in LISTS.items():
        seen = listed(principal.client)
        foreign = other.project if kind == "project" else other.bucket
        mine = own.project if kind == "project" else own.bucket
        assert foreign not in seen, (key, seen)
        if key != "GET /previews" and kind in principal.reaches:  # no preview runs
            assert mine in seen, (key, seen)


# ---------------------------------------------------------------- the websocket


def _close_code(world: World, path: str, headers: dict[str, str]) -> int | None:
    with ws_connect(f"ws://127.0.0.1:{world.agent.port}{path}", additional_headers=headers,
                    open_timeout=30) as socket:
        try:
            while True:  # the branch's events so far, then silence while it stays open
                socket.recv(timeout=3)
        except TimeoutError:
            return None
        except ConnectionClosed:
            return socket.close_code


def test_the_events_websocket_refuses_another_tenant_like_a_missing_branch(world):
    missing = Tenant.missing()
    for name, other in (("a", "b"), ("b", "a")):
        headers = {"Authorization": f"Bearer {world.users[name].token}"}
        theirs = world.tenants[other]
        mine = world.tenants[name]
        assert _close_code(world, f"/ws/events/{theirs.project}/{theirs.branch}", headers) \
            == 4404
        assert _close_code(world, f"/ws/events/{missing.project}/{missing.branch}", headers) \
            == 4404
        assert _close_code(world, f"/ws/events/{mine.project}/{mine.branch}", headers) is None


def test_a_read_only_token_may_follow_the_events_websocket(world, tokens):
    a = world.tenants["a"]
    token = tokens["read-only token of project a"].client.headers["Authorization"]
    assert _close_code(world, f"/ws/events/{a.project}/{a.branch}",
                       {"Authorization": token}) is None


# ---------------------------------------------------------------- one's own (last: destructive)


def _expected_own(principal: Principal, operation: Operation) -> str:
    if operation.kind not in principal.reaches:
        return "refused"
    if principal.read_only and not operation.safe:
        return "read_only"
    return "allowed"


def test_each_principal_uses_its_own_objects(world, principals):
    refusal_codes = {"project_not_found", "bucket_not_found", "no_exec", "run_not_found"}
    wrong = []
    for operation in OPERATIONS:  # in order: the kill and the unmount come last
        for principal in principals.values():
            tenant = world.tenants[principal.own]
            got: Answer = operation.call(principal.client, tenant)
            expected = _expected_own(principal, operation)
            if expected == "read_only":
                ok = (got.status, got.code) == (403, "read_only")
            elif expected == "refused":
                ok = got.status == 404 and got.code in refusal_codes
            else:
                ok = got.status < 500 and got.status != 403 and got.code not in refusal_codes
            if not ok:
                wrong.append(f"{principal.name} {operation.key}: expected {expected}, "
                             f"got {got.status} {got.body}")
            if operation.key == "POST /mounts/unmount" and expected == "allowed":
                # unmounted by the first who may; the next mounts it back to try again
                principal.client.post("/mounts", json={"bucket": tenant.bucket})
    assert wrong == [], "\n".join(wrong)


def test_operator_tokens_reach_everything(world):
    operator = _token(world)
    for tenant in world.tenants.values():
        assert operator.get(f"/projects/{tenant.project}/branches").status_code == 200
        assert operator.get(f"/mounts/{tenant.bucket}").status_code == 200
    seen = LISTS["GET /projects"][1](operator)
    assert {t.project for t in world.tenants.values()} <= set(seen)


def test_create_api_token_help_names_the_scopes(world):
    output = world.agent.manage("create_api_token", "--help").stdout
    for flag in ("--project", "--bucket", "--read-only"):
        assert flag in output
    with pytest.raises(CommandError, match="not a valid bucket name"):
        world.agent.manage("create_api_token", "--name", "x", "--bucket", "Not_A_Bucket")


def test_scoped_token_is_shown_in_the_admin_changelist(admin_client_with_token):
    page, name = admin_client_with_token
    assert b"projects p-one" in page and b"read-only" in page, name


@pytest.fixture
def admin_client_with_token(monkeypatch) -> tuple[bytes, str]:
    from django.core.management import call_command
    from django.test import Client

    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "a-long-enough-password-1")
    call_command("createsuperuser", interactive=False, username="ops", email="o@example.com",
                 verbosity=0)
    call_command("create_api_token", "--name", "scoped", "--project", "p-one", "--read-only")
    client = Client()
    assert client.login(username="ops", password="a-long-enough-password-1")
    response = client.get("/admin/weldr_agent/apitoken/")
    assert response.status_code == 200
    return response.content, "scoped"


def test_no_view_went_undeclared(world):
    # A view naming no object and declaring no `tenant` is refused with ImproperlyConfigured.
    log = Path(world.agent.log).read_text()
    assert "ImproperlyConfigured" not in log, log[-3000:]


def test_a_view_that_names_nothing_and_declares_nothing_is_refused_to_everyone():
    # A new endpoint cannot skip the rule by forgetting it: even the operator gets an error.
    from django.core.exceptions import ImproperlyConfigured
    from rest_framework.response import Response
    from rest_framework.test import APIRequestFactory, force_authenticate
    from rest_framework.views import APIView

    from weldr_agent.auth import Principal as Caller

    class Undeclared(APIView):
        def get(self, request):  # type: ignore[no-untyped-def]
            return Response({"secret": "of every tenant"})

    request = APIRequestFactory().get("/undeclared")
    force_authenticate(request, user=Caller(kind="agent_token", name="operator"))
    with pytest.raises(ImproperlyConfigured, match="declare `tenant`"):
        Undeclared.as_view()(request)


def test_project_id_keeps_a_user_to_that_project_and_its_buckets(settings):
    from weldr_agent import access
    from weldr_agent.auth import Principal as Caller
    from workflows.models import Branch, Project

    # given a user owning two projects, each naming a bucket, on an agent serving one of them
    mine = Project.objects.create(name="served", owner_id="u-pid")
    other = Project.objects.create(name="elsewhere", owner_id="u-pid")
    Branch.objects.create(project=mine, name="main", bucket="pid-served")
    Branch.objects.create(project=other, name="main", bucket="pid-elsewhere")
    user = Caller(kind="session", name="u-pid", user_id="u-pid")
    settings.PROJECT_ID = mine.id
    # then only the served project and its bucket are theirs here
    assert access.project_allowed(user, mine.id) and not access.project_allowed(user, other.id)
    assert access.bucket_allowed(user, "pid-served")
    assert not access.bucket_allowed(user, "pid-elsewhere")
    assert access.visible_projects(user) == {mine.id}
    assert access.visible_buckets(user) == {"pid-served"}
    # and without PROJECT_ID both are
    settings.PROJECT_ID = ""
    assert access.visible_projects(user) == {mine.id, other.id}


def test_something_that_is_no_principal_owns_nothing():
    from weldr_agent import access

    for nobody in (None, object()):
        assert not access.is_operator(nobody)
        assert not access.bucket_allowed(nobody, "any-bucket")
        assert access.visible_projects(nobody) == frozenset()
