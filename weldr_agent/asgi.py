"""One ASGI application: HTTP through Django (and `/mcp`), websockets through Channels."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "weldr_agent.settings")

import django  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

django.setup(set_prefix=False)  # what django.core.asgi.get_asgi_application does first

from weldr_agent.asgi_handler import PooledThreadsASGIHandler  # noqa: E402

# Django's handler, with request threads kept between requests (weldr_agent/asgi_handler.py).
django_application = PooledThreadsASGIHandler()

from mcp_server.routing import with_mcp  # noqa: E402
from weldr_agent.routing import websocket_urlpatterns  # noqa: E402
from weldr_agent.ws_auth import WebsocketAuthMiddleware  # noqa: E402

application = ProtocolTypeRouter({
    # `/mcp`: the MCP server (mcp_server/), authenticated by the API itself.
    "http": with_mcp(django_application),
    "websocket": WebsocketAuthMiddleware(URLRouter(websocket_urlpatterns)),
})
