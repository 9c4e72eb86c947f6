"""Serializers every app shares: the error shape and a base that refuses unknown fields.

- `StrictSerializer` (and `StrictModelSerializer`): a request naming a field the serializer does
  not have is a 400 `invalid` with `errors: {"<field>": ["Unknown field."]}`, instead of being
  silently ignored (a typo such as `"comand"` must not run a default). Read-only fields are
  accepted and ignored, so a client may send back what it read.
- `ErrorSerializer`: the error body of docs/api.md, `{"detail", "code"}` plus `errors` for
  validation failures. `error_responses(404, 409)` declares such responses in
  `extend_schema(responses=...)`; 400/401/403/413/415 are added to every operation
  automatically by `weldr_agent.schema.AutoSchema`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers

ERROR_DESCRIPTIONS = {
    400: "The request is malformed or invalid (`code`: `invalid`, `parse_error`, …).",
    401: "No credential, or a bad one (`code`: `not_authenticated`).",
    403: "The user does not own this machine's project (`code`: `forbidden`), or the agent "
         "token is read-only (`read_only`) or scoped (`out_of_scope`).",
    404: "No such object, or one the caller may not touch: the same answer "
         "(`code`: `not_found`, `project_not_found`, `bucket_not_found`, …).",
    405: "The method is not allowed here (`code`: `method_not_allowed`).",
    409: "The request conflicts with the machine's state.",
    413: "The request body is larger than the cap (`code`: `payload_too_large`).",
    415: "The body is not JSON (`code`: `unsupported_media_type`).",
    500: "A system command failed; `detail` carries the tail of its log.",
    503: "A dependency is unavailable.",
}


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="One sentence a person can act on.")
    code = serializers.CharField(help_text="Machine-readable snake_case code.")
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()), required=False,
        help_text="Validation errors by field (only with `code: invalid`).",
    )

    class Meta:
        ref_name = "Error"


def error_responses(*status_codes: int, **descriptions: str) -> dict[int, OpenApiResponse]:
    """`{status: OpenApiResponse(Error)}` for `extend_schema(responses={200: X, **...})`.

    Describe a status specifically with a keyword: `error_responses(404, 409, e409="...")`.
    """
    return {
        code: OpenApiResponse(
            ErrorSerializer,
            description=descriptions.get(f"e{code}", ERROR_DESCRIPTIONS.get(code, "Error.")),
        )
        for code in status_codes
    }


class RejectUnknownFields:
    """Refuses (400 `invalid`) a body naming a field the serializer does not declare; its
    request shape in the OpenAPI document says so (`additionalProperties: false`)."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            unknown = sorted(set(data) - set(self.fields))  # type: ignore[attr-defined]
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)  # type: ignore[misc]


class StrictSerializer(RejectUnknownFields, serializers.Serializer):
    """A Serializer that answers 400 `invalid` to fields it does not declare."""


class StrictModelSerializer(RejectUnknownFields, serializers.ModelSerializer):
    """A ModelSerializer that answers 400 `invalid` to fields it does not declare."""


class ShallowCopiedFields:
    """Mixin for a serializer on a hot request path: each instance copies the declared fields
    shallowly instead of deeply.

    DRF deep-copies every declared field for every instance (a field's `__deepcopy__` runs its
    `__init__` again with deep-copied arguments): for POST /exec's nine fields, ~0.15 ms of a
    3.4 ms round trip here (docs/exec.md, "Measured"). A shallow copy is enough: binding a
    field to its serializer sets attributes of the copy, and validation does not change what a
    copy shares with the declared field (its validators, error messages, a `child` field). A
    nested serializer caches its own bound fields, so it is still deep-copied.
    """

    def get_fields(self) -> dict[str, serializers.Field]:
        return {name: copy.deepcopy(field) if isinstance(field, serializers.BaseSerializer)
                else copy.copy(field)
                for name, field in self._declared_fields.items()}  # type: ignore[attr-defined]
