"""Thin views of the egress API (docs/api.md, "Egress")."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from egress import services
from egress.serializers import EgressPolicyInputSerializer, EgressPolicySerializer
from mounts.validators import validate_bucket_name
from weldr_agent.serializers import error_responses


class EgressPolicyView(APIView):
    """What the bucket's sandboxes (commands and previews) may reach beyond the host."""

    @extend_schema(operation_id="mounts_egress_retrieve",
                   responses={200: EgressPolicySerializer, **error_responses(400)})
    def get(self, request: Request, bucket: str) -> Response:
        policy = services.egress_policy_get(bucket=validate_bucket_name(bucket))
        return Response(EgressPolicySerializer(policy).data)

    @extend_schema(operation_id="mounts_egress_update", request=EgressPolicyInputSerializer,
                   responses={200: EgressPolicySerializer, **error_responses(400)})
    def put(self, request: Request, bucket: str) -> Response:
        serializer = EgressPolicyInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        policy = services.egress_policy_set(bucket=validate_bucket_name(bucket),
                                            **serializer.validated_data)
        return Response(EgressPolicySerializer(policy).data)

    @extend_schema(operation_id="mounts_egress_destroy",
                   responses={200: EgressPolicySerializer, **error_responses(400)})
    def delete(self, request: Request, bucket: str) -> Response:
        policy = services.egress_policy_delete(bucket=validate_bucket_name(bucket))
        return Response(EgressPolicySerializer(policy).data)
