from django.urls import path

from previews import views
from previews.views_exec import ExecDetailView, ExecLogsView, ExecView

urlpatterns = [
    path("previews", views.PreviewListView.as_view(), name="preview-list"),
    path("previews/start", views.PreviewStartView.as_view(), name="preview-start"),
    path("previews/stop", views.PreviewStopView.as_view(), name="preview-stop"),
    path("previews/<str:bucket>", views.PreviewDetailView.as_view(), name="preview-detail"),
    path("previews/<str:bucket>/logs", views.PreviewLogsView.as_view(), name="preview-logs"),
    path("previews/<str:bucket>/tokens", views.PreviewTokenView.as_view(),
         name="preview-tokens"),
    path("exec", ExecView.as_view(), name="exec"),
    path("exec/<str:exec_id>", ExecDetailView.as_view(), name="exec-detail"),
    path("exec/<str:exec_id>/logs", ExecLogsView.as_view(), name="exec-logs"),
]
