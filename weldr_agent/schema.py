"""The OpenAPI generator: drf-spectacular's, plus the error responses every operation can give.

Apps declare their specific errors (`error_responses(404, 409)` from weldr_agent.serializers);
this adds the ones the plumbing produces, so the document never omits them:
401/403 where credentials are required, 400/413/415 where a body is accepted, 404 where the
path has a parameter.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from rest_framework.permissions import AllowAny

from weldr_agent.serializers import error_responses


class AutoSchema(SpectacularAutoSchema):
    def _plumbing_errors(self) -> list[int]:
        codes = []
        if self.method in ("POST", "PUT", "PATCH"):
            codes += [400, 413, 415]
        if self.view.authentication_classes and not all(
            isinstance(permission, AllowAny) for permission in self.view.get_permissions()
        ):
            codes += [401, 403]
        if "{" in self.path:
            codes.append(404)
        return codes

    def get_response_serializers(self) -> Any:
        declared = super().get_response_serializers()
        if not isinstance(declared, dict):
            # The same defaults drf-spectacular applies to a bare serializer.
            if self.method == "DELETE":
                declared = {204: None}
            else:
                declared = {201 if self._is_create_operation() else 200: declared}
        extra = error_responses(*(c for c in self._plumbing_errors() if c not in declared
                                   and str(c) not in declared))
        return {**declared, **extra}
