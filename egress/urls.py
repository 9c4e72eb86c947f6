from django.urls import path

from egress.views import EgressPolicyView

# Under the mount's path (it is the bucket's policy), but egress's own: mounts imports no egress.
urlpatterns = [
    path("mounts/<str:bucket>/egress", EgressPolicyView.as_view(), name="mount-egress"),
]
