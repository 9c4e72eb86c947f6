from django.urls import path

from workflows import views

urlpatterns = [
    path("projects", views.ProjectListView.as_view(), name="projects"),
    path("projects/<str:project_id>/branches", views.BranchListView.as_view(), name="branches"),
    path("trigger", views.TriggerView.as_view(), name="trigger"),
    path("runs", views.RunListView.as_view(), name="runs"),
    path("runs/<str:run_id>", views.RunDetailView.as_view(), name="run"),
    path("revert", views.RevertView.as_view(), name="revert"),
    path("events", views.EventStreamView.as_view(), name="events"),
    path("integrations", views.IntegrationListView.as_view(), name="integrations"),
    path("install-integrations", views.InstallIntegrationsView.as_view(),
         name="install-integrations"),
]
