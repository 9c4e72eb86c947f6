"""One ASGI application: HTTP through Django (and `/mcp`), websockets through Channels."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "weldr_agent.settings")

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402

django_application = get_asgi_application()

from mcp_server.routing import with_mcp  # noqa: E402
from weldr_agent.routing import websocket_urlpatterns  # noqa: E402
from weldr_agent.ws_auth import WebsocketAuthMiddleware  # noqa: E402

application = ProtocolTypeRouter({
    # `/mcp`: the MCP server (mcp_server/), authenticated by the API itself.
    "http": with_mcp(django_application),
    "websocket": WebsocketAuthMiddleware(URLRouter(websocket_urlpatterns)),
})
