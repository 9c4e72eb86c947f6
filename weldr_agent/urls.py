from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularJSONAPIView, SpectacularSwaggerView

from weldr_agent.views import HealthView, LivenessView, WhoAmIView

urlpatterns = [
    path("health", HealthView.as_view(), name="health"),
    path("health/live", LivenessView.as_view(), name="liveness"),
    path("whoami", WhoAmIView.as_view(), name="whoami"),
    path("openapi.json", SpectacularJSONAPIView.as_view(authentication_classes=[],
                                                    permission_classes=[]), name="openapi"),
    path("docs", SpectacularSwaggerView.as_view(url_name="openapi", authentication_classes=[],
                                                permission_classes=[]), name="docs"),
    path("admin/", admin.site.urls),
    # Each include a path misses costs its resolution a Resolver404 and the list of patterns
    # tried: the hottest path, POST /exec (docs/exec.md, "Measured"), is looked for first. No
    # two includes share a path, so the order decides nothing else.
    path("", include("commands.urls")),
    path("", include("mounts.urls")),
    path("", include("egress.urls")),
    path("", include("previews.urls")),
    path("", include("workflows.urls")),
]

handler400 = "weldr_agent.errors.handler400"
handler403 = "weldr_agent.errors.handler403"
handler404 = "weldr_agent.errors.handler404"
handler500 = "weldr_agent.errors.handler500"
