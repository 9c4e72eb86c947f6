from django.urls import path

from commands.views import ExecDetailView, ExecLogsView, ExecView

urlpatterns = [
    path("exec", ExecView.as_view(), name="exec"),
    path("exec/<str:exec_id>", ExecDetailView.as_view(), name="exec-detail"),
    path("exec/<str:exec_id>/logs", ExecLogsView.as_view(), name="exec-logs"),
]
