from django.urls import path

from workflows.consumers import EventConsumer

websocket_urlpatterns: list = [
    path("ws/events/<str:project_id>/<str:branch_id>", EventConsumer.as_asgi()),
]
