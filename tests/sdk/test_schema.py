"""The SDK covers /openapi.json exactly: every operation has an entry in its table and a method
that calls it, and no entry names an operation the agent does not serve."""

from __future__ import annotations

from weldr_sdk import aio, client
from weldr_sdk.api import MountsAPI, SnapshotsAPI, covered_operations
from weldr_sdk.operations import OPERATIONS

import tests.sdk.conftest  # noqa: F401  (puts the SDK on the path)

CLASSES = [client.Client, client.Files, client.Commands, client.Command, client.Previews,
           client.Workflows, aio.AsyncClient, aio.AsyncFiles, aio.AsyncCommands,
           aio.AsyncCommand, aio.AsyncPreviews, aio.AsyncWorkflows]


def served() -> set[tuple[str, str]]:
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    return {(method.upper(), path) for path, operations in schema["paths"].items()
            for method in operations if method.upper() in {"GET", "POST", "PUT", "DELETE",
                                                           "PATCH"}}


def test_every_served_operation_has_an_sdk_entry_and_every_entry_is_served():
    table = {(op.method, op.path) for op in OPERATIONS.values()}
    assert sorted(served() - table) == [], "operations the SDK lacks"
    assert sorted(table - served()) == [], "SDK entries the agent does not serve"


def test_every_entry_is_called_by_a_method_of_both_clients():
    # Both clients share the plain namespaces (api.py): mounts and snapshots have no subclass.
    for flavour in ([c for c in CLASSES if c.__module__.endswith(".client")],
                    [c for c in CLASSES if c.__module__.endswith(".aio")]):
        covered = covered_operations(MountsAPI, SnapshotsAPI, *flavour)
        assert sorted(set(OPERATIONS) - set(covered)) == []
        assert sorted(set(covered) - set(OPERATIONS)) == []
