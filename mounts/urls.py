from django.urls import path

from mounts.views import MountViewSet
from mounts.views_files import FileContentView, FilesView

urlpatterns = [
    path("mounts", MountViewSet.as_view({"get": "list", "post": "create"}), name="mount-list"),
    path("mounts/unmount", MountViewSet.as_view({"post": "unmount"}), name="mount-unmount"),
    path("mounts/<str:bucket>", MountViewSet.as_view({"get": "retrieve"}), name="mount-detail"),
    path("mounts/<str:bucket>/sync", MountViewSet.as_view({"post": "sync"}), name="mount-sync"),
    path("files/<str:bucket>", FilesView.as_view(), name="files"),
    path("files/<str:bucket>/content", FileContentView.as_view(), name="file-content"),
]
