from django.urls import path

from previews import views

urlpatterns = [
    path("previews", views.PreviewListView.as_view(), name="preview-list"),
    path("previews/start", views.PreviewStartView.as_view(), name="preview-start"),
    path("previews/stop", views.PreviewStopView.as_view(), name="preview-stop"),
    path("previews/<str:bucket>", views.PreviewDetailView.as_view(), name="preview-detail"),
    path("previews/<str:bucket>/logs", views.PreviewLogsView.as_view(), name="preview-logs"),
    path("previews/<str:bucket>/tokens", views.PreviewTokenView.as_view(),
         name="preview-tokens"),
]
