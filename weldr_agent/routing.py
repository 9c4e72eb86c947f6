"""Websocket routes of every app."""

from workflows.routing import websocket_urlpatterns as workflow_routes

websocket_urlpatterns = [*workflow_routes]
