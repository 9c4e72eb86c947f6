from django.urls import path

from mounts.views_files import FileContentView, FilesView

urlpatterns: list = [
    path("files/<str:bucket>", FilesView.as_view(), name="files"),
    path("files/<str:bucket>/content", FileContentView.as_view(), name="file-content"),
]
