"""Tenants: which principal may touch which project and which bucket (docs/security.md, "Tenants").

The one rule, decided here and nowhere else:

- an **unscoped agent token** is the operator's: every project, every bucket;
- a **scoped agent token** touches the projects it names, the buckets it names, and the buckets
  its projects name (`workflows.Branch.bucket`);
- a **platform user** (session, JWT, API key) touches the projects they own
  (`Project.owner_id`) and the buckets those projects name; with PROJECT_ID set, only that
  project (an agent serving one project);
- a **read-only** token uses safe methods only (GET, HEAD, OPTIONS: event streams and the
  websocket included, they only read).

A refused object answers exactly as a missing one (404, the same body): a principal learns only
about its own objects. The base knows no app: the workflows app supplies the ownership data
(`ownership_register`) and apps name the URL parameters that identify an object
(`lookup_register`), as they register lifecycle hooks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from rest_framework import exceptions, permissions
from rest_framework.request import Request


@dataclass(frozen=True)
class Scope:
    """What an agent token may touch; empty projects and buckets: everything (the operator)."""

    projects: frozenset[str] = frozenset()
    buckets: frozenset[str] = frozenset()
    read_only: bool = False

    @property
    def unscoped(self) -> bool:
        return not self.projects and not self.buckets


OPERATOR = Scope()


class Ownership(Protocol):
    """The platform's data about who owns what (supplied by the workflows app)."""

    def project_owner(self, project_id: str) -> str | None:
        """The owner's user id, or None when there is no such project."""

    def projects_owned(self, user_id: str) -> set[str]:
        """The ids of the projects `user_id` owns."""

    def bucket_projects(self, bucket: str) -> set[str]:
        """The ids of the projects a branch of which names `bucket`."""

    def project_buckets(self, project_ids: Iterable[str]) -> set[str]:
        """The buckets the branches of these projects name."""


class _NoOwnership:
    """Without the workflows app nobody owns anything: only agent tokens get through."""

    def project_owner(self, project_id: str) -> str | None:
        return None

    def projects_owned(self, user_id: str) -> set[str]:
        return set()

    def bucket_projects(self, bucket: str) -> set[str]:
        return set()

    def project_buckets(self, project_ids: Iterable[str]) -> set[str]:
        return set()


_ownership: Ownership = _NoOwnership()


def ownership_register(provider: Ownership) -> None:
    """Called by the app that holds projects (workflows) in its AppConfig.ready()."""
    global _ownership
    _ownership = provider


# ---------------------------------------------------------------- the rule


def _scope(principal: Any) -> Scope | None:
    """An agent token's scope; None for anyone else (ownership decides: a platform user owns
    what their user id owns, anything else nothing)."""
    if getattr(principal, "kind", None) == "agent_token":
        return principal.scope
    return None


def _user_id(principal: Any) -> str | None:
    return getattr(principal, "user_id", None) or None


def is_operator(principal: Any) -> bool:
    scope = _scope(principal)
    return scope is not None and scope.unscoped


def project_allowed(principal: Any, project_id: str) -> bool:
    """May `principal` touch this project (False for a project that does not exist)."""
    scope = _scope(principal)
    if scope is not None:
        return scope.unscoped or project_id in scope.projects
    if settings.PROJECT_ID and project_id != settings.PROJECT_ID:
        return False
    user_id = _user_id(principal)
    return user_id is not None and _ownership.project_owner(project_id) == user_id


def _same_bucket(name: str) -> str:
    return name


# What a workspace name answers to: itself, or (a fork, registered by the mounts app) the bucket
# it was forked from — a fork is its parent's to touch.
_owning_bucket: Callable[[str], str] = _same_bucket


def owning_bucket_register(resolve: Callable[[str], str]) -> None:
    global _owning_bucket
    _owning_bucket = resolve


def owning_bucket(name: str) -> str:
    return _owning_bucket(name)


def bucket_allowed(principal: Any, bucket: str) -> bool:
    """May `principal` touch this bucket (or fork of a bucket): its own scope, or a project it
    may touch names it."""
    bucket = _owning_bucket(bucket)
    scope = _scope(principal)
    if scope is not None and (scope.unscoped or bucket in scope.buckets):
        return True
    projects = _ownership.bucket_projects(bucket)
    return any(project_allowed(principal, project) for project in projects)


def visible_projects(principal: Any) -> frozenset[str] | None:
    """The projects a list may show `principal`; None: all of them (the operator)."""
    scope = _scope(principal)
    if scope is not None:
        return None if scope.unscoped else scope.projects
    user_id = _user_id(principal)
    owned = _ownership.projects_owned(user_id) if user_id else set()
    if settings.PROJECT_ID:
        owned &= {settings.PROJECT_ID}
    return frozenset(owned)


def visible_buckets(principal: Any) -> frozenset[str] | None:
    """The buckets a list may show `principal`; None: all of them (the operator)."""
    projects = visible_projects(principal)
    if projects is None:
        return None
    scope = _scope(principal)
    own = scope.buckets if scope is not None else frozenset()
    return frozenset(_ownership.project_buckets(projects)) | own


def narrow(queryset: Any, principal: Any, *, projects: str | None = None,
           buckets: str | None = None) -> Any:
    """`queryset` filtered to what `principal` may see: its field `projects` holds a project
    id, or its field `buckets` a bucket name."""
    if projects is not None and (allowed := visible_projects(principal)) is not None:
        queryset = queryset.filter(**{f"{projects}__in": allowed})
    if buckets is not None and (allowed := visible_buckets(principal)) is not None:
        queryset = queryset.filter(**{f"{buckets}__in": allowed})
    return queryset


def bucket_claimable(principal: Any, bucket: str) -> bool:
    """May a new branch of `principal`'s name `bucket`: no project it may not touch names it
    already (otherwise naming a bucket would be a way into another tenant's workspace)."""
    projects = _ownership.bucket_projects(bucket)
    return all(project_allowed(principal, project) for project in projects)


# ---------------------------------------------------------------- what a view touches


@dataclass(frozen=True)
class Target:
    """An object a request touches: `kind` "project" or "bucket", and its id or name."""

    kind: str
    name: str


def target_allowed(principal: Any, target: Target) -> bool:
    check = project_allowed if target.kind == "project" else bucket_allowed
    return check(principal, target.name)


class BucketNotFound(exceptions.APIException):
    # Not weldr_agent.errors.NotFoundError: that module imports DRF's views, which load the
    # permission classes (this module) while DRF reads its settings.
    status_code = 404
    default_code = "bucket_not_found"
    default_detail = "No such bucket."


@dataclass(frozen=True)
class Lookup:
    """How a parameter's value names an object, and the error a missing one answers."""

    resolve: Callable[[str], Target | None]
    missing: Callable[[str], exceptions.APIException]


_lookups: dict[str, Lookup] = {
    "bucket": Lookup(lambda name: Target("bucket", name), lambda name: BucketNotFound()),
}


def lookup_register(parameter: str, *, resolve: Callable[[str], Target | None],
                    missing: Callable[[str], exceptions.APIException]) -> None:
    """Name a URL/body/query parameter that identifies an object (apps, in ready()): `resolve`
    gives the project or bucket it belongs to (None: no such object); `missing(value)` is the
    error the endpoint answers for a missing one — and so for a refused one."""
    _lookups[parameter] = Lookup(resolve, missing)


@dataclass(frozen=True)
class Objects:
    """What a view declares as `tenant` (or `{action or method: Objects}`) besides its URL.

    body/query: parameters naming the objects it touches (each registered with
    `lookup_register`, e.g. "bucket", "project_id"); optional: an absent one is not checked (a
    list narrowed by it); lists: the view filters what it lists with `visible_projects` /
    `visible_buckets`; creates_project: it makes a new project (not for scoped tokens).
    """

    body: tuple[str, ...] = ()
    query: tuple[str, ...] = ()
    optional: bool = False
    lists: bool = False
    creates_project: bool = False
    reason: str = field(default="", compare=False)


# A view that touches no tenant's object (who am I, the integrations catalogue).
NOTHING = Objects(reason="touches no project or bucket")
LISTS = Objects(lists=True)


class OutOfScope(exceptions.PermissionDenied):
    default_code = "out_of_scope"
    default_detail = "This agent token is scoped to some projects and buckets; it cannot do this."


class ReadOnlyToken(exceptions.PermissionDenied):
    default_code = "read_only"
    default_detail = "This agent token is read-only: GET, HEAD and OPTIONS only."


def _declared(view: Any, request: Request) -> Objects | None:
    tenant = getattr(view, "tenant", None)
    if isinstance(tenant, dict):
        action = getattr(view, "action", None)
        return tenant.get(action) or tenant.get(request.method.lower())
    return tenant


def declares_objects(view: Any, method: str) -> bool:
    """Does the view name objects in its body or query for `method` (the schema then lists the
    404 a refused or missing one answers)."""
    tenant = getattr(view, "tenant", None)
    if isinstance(tenant, dict):
        tenant = tenant.get(getattr(view, "action", None)) or tenant.get(method.lower())
    return isinstance(tenant, Objects) and bool(tenant.body or tenant.query)


def _value(source: Any, name: str, optional: bool) -> str | None:
    value = source.get(name) if hasattr(source, "get") else None
    if value is None and optional:
        return None
    if value is None:
        raise exceptions.ValidationError({name: ["This field is required."]})
    if not isinstance(value, str):
        raise exceptions.ValidationError({name: ["Not a valid string."]})
    return value


def _declaration(view: Any, request: Request) -> tuple[Objects, list[tuple[str, str]]]:
    """The view's declaration and the URL parameters naming objects; a view that names none
    and declares nothing is a programming error, refused for everyone (fail closed)."""
    if request.method == "OPTIONS" or getattr(view, request.method.lower(), None) is None:
        # No handler runs (OPTIONS describes the endpoint, anything else is a 405).
        return NOTHING, []
    kwargs = getattr(view, "kwargs", {}) or {}
    in_url = [(name, str(value)) for name, value in kwargs.items() if name in _lookups]
    declared = _declared(view, request)
    if declared is None and not in_url:
        raise ImproperlyConfigured(
            f"{type(view).__name__} names no project or bucket: declare `tenant` "
            "(weldr_agent.access.Objects, NOTHING or LISTS).")
    return declared or Objects(), in_url


def _parameters(declared: Objects, request: Request) -> list[tuple[str, str]]:
    """(parameter, value) of every object the request's body and query name."""
    found = []
    for source, names in ((request.data, declared.body), (request.query_params, declared.query)):
        for name in names:
            value = _value(source, name, declared.optional)
            if value is not None:
                found.append((name, value))
    return found


def request_check(request: Request, view: Any) -> None:
    """Raise unless the request's principal may touch every object the view names."""
    principal = request.user
    scope = _scope(principal)
    if scope is not None and scope.read_only and request.method not in permissions.SAFE_METHODS:
        raise ReadOnlyToken()
    declared, in_url = _declaration(view, request)
    if is_operator(principal):
        return
    if declared.creates_project and scope is not None:
        raise OutOfScope()
    for name, value in [*in_url, *_parameters(declared, request)]:
        lookup = _lookups[name]
        target = lookup.resolve(value)
        if target is None or not target_allowed(principal, target):
            raise lookup.missing(value)


class TenantAccess(permissions.BasePermission):
    """The default permission: `request_check` on every view (weldr_agent.access)."""

    def has_permission(self, request: Request, view: Any) -> bool:
        # Websocket handshakes run the permission classes without a view: their consumer
        # applies the rule to the object in its URL (workflows.consumers).
        if view is not None:
            request_check(request, view)
        return True
