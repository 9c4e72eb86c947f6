from django.urls import path

from mounts.views import MountViewSet
from mounts.views_files import FileContentView, FilesView
from mounts.views_snapshots import (
    ForkPromoteView,
    SnapshotDetailView,
    SnapshotForkView,
    SnapshotListView,
    SnapshotPolicyView,
    SnapshotRestoreView,
)

urlpatterns = [
    path("mounts", MountViewSet.as_view({"get": "list", "post": "create"}), name="mount-list"),
    path("mounts/unmount", MountViewSet.as_view({"post": "unmount"}), name="mount-unmount"),
    path("mounts/<str:bucket>", MountViewSet.as_view({"get": "retrieve"}), name="mount-detail"),
    path("mounts/<str:bucket>/sync", MountViewSet.as_view({"post": "sync"}), name="mount-sync"),
    path("mounts/<str:bucket>/snapshots", SnapshotListView.as_view(), name="snapshot-list"),
    path("mounts/<str:bucket>/snapshots/policy", SnapshotPolicyView.as_view(),
         name="snapshot-policy"),
    path("mounts/<str:bucket>/snapshots/<str:snapshot_id>", SnapshotDetailView.as_view(),
         name="snapshot-detail"),
    path("mounts/<str:bucket>/snapshots/<str:snapshot_id>/restore",
         SnapshotRestoreView.as_view(), name="snapshot-restore"),
    path("mounts/<str:bucket>/snapshots/<str:snapshot_id>/fork", SnapshotForkView.as_view(),
         name="snapshot-fork"),
    path("mounts/<str:bucket>/promote", ForkPromoteView.as_view(), name="fork-promote"),
    path("files/<str:bucket>", FilesView.as_view(), name="files"),
    path("files/<str:bucket>/content", FileContentView.as_view(), name="file-content"),
]
