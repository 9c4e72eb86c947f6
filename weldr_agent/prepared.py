"""ORM lookups compiled to SQL once, for the ones every request makes (its token, its mount).

Turning a QuerySet into SQL is most of a simple lookup's cost: ~0.3 ms of Python for a token
lookup on this machine, against ~0.05 ms to run the same SQL and build the model instance
(docs/exec.md, "Measured"). A `Prepared` lookup is written as an ORM query, compiled the first
time it runs on a database, and from then on only executed, with this call's values in the
places of its parameters; the row is converted and the instance built as the ORM does it (the
compiler's converters, `Model.from_db`).

Only plain comparisons can be parameters (`field=value`): a value the ORM rewrites (`__contains`
wraps it in `%`) would not be found in the compiled parameters, and the compilation says so.
Every other value is compiled in once: a value that changes from call to call (the time, for
an expiry) must be a parameter, or it stays what it was at the first call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from django.core.exceptions import ImproperlyConfigured
from django.db import connections, models, router

M = TypeVar("M", bound=models.Model)


@dataclass(frozen=True)
class _Parameter:
    """The place of a call's value among the compiled SQL's parameters."""

    name: str


def _placeholder(name: str) -> str:
    return f"\x00weldr-prepared-{name}\x00"  # a value no caller sends


@dataclass(frozen=True)
class _Compiled:
    sql: str
    places: list[Any]  # the SQL's parameters: constants, or _Parameter for a call's value
    attnames: list[str]  # the model fields its columns fill, in order
    # The ORM's conversions of column values (JSON, dates…), by column: (converters, expression).
    converters: dict[int, tuple[list[Callable[..., Any]], Any]]


class Prepared(Generic[M]):
    """`build(**parameters)` → a QuerySet; `first(**values)` runs its compiled SQL."""

    def __init__(self, model: type[M], build: Callable[..., models.QuerySet[M]],
                 *parameters: str) -> None:
        self.model, self.build, self.parameters = model, build, parameters
        self._compiled: dict[str, _Compiled] = {}  # by database alias

    def _compile(self, alias: str) -> _Compiled:
        queryset = self.build(**{name: _placeholder(name) for name in self.parameters})[:1]
        compiler = queryset.query.get_compiler(using=alias)
        sql, params = compiler.as_sql()
        names = {_placeholder(name): name for name in self.parameters}
        places = [_Parameter(names[p]) if isinstance(p, str) and p in names else p
                  for p in params]
        found = {place.name for place in places if isinstance(place, _Parameter)}
        if found != set(self.parameters):
            raise ImproperlyConfigured(
                f"Prepared query on {self.model.__name__}: "
                f"{sorted(set(self.parameters) - found)} are not plain parameters of its SQL.")
        columns = [expression for expression, _, _ in compiler.select]
        compiled = _Compiled(sql=sql, places=places,
                             attnames=[column.target.attname for column in columns],
                             converters=compiler.get_converters(columns))
        self._compiled[alias] = compiled
        return compiled

    def first(self, **values: Any) -> M | None:
        """The first row of the QuerySet (in its order: give it one where several can match),
        converted and built as the ORM builds it (`Model.from_db`)."""
        alias = router.db_for_read(self.model)
        compiled = self._compiled.get(alias) or self._compile(alias)
        params = [values[p.name] if isinstance(p, _Parameter) else p for p in compiled.places]
        connection = connections[alias]
        with connection.cursor() as cursor:
            cursor.execute(compiled.sql, params)
            row = cursor.fetchone()
        if row is None:
            return None
        row = list(row)
        for position, (converters, expression) in compiled.converters.items():
            for converter in converters:
                row[position] = converter(row[position], expression, connection)
        return self.model.from_db(alias, compiled.attnames, row)
