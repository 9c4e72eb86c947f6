from django.urls import path

from mounts.views import MountViewSet

urlpatterns = [
    path("mounts", MountViewSet.as_view({"get": "list", "post": "create"}), name="mount-list"),
    path("mounts/unmount", MountViewSet.as_view({"post": "unmount"}), name="mount-unmount"),
    path("mounts/<str:bucket>", MountViewSet.as_view({"get": "retrieve"}), name="mount-detail"),
    path("mounts/<str:bucket>/sync", MountViewSet.as_view({"post": "sync"}), name="mount-sync"),
]
