"""The API's addresses: /api/v1/ (a router of viewsets plus three plain views), the OpenAPI
schema at /api/schema/ and its browsable docs at /api/docs/.

The schema and the docs are public: they describe the API, not its data, and client
generators fetch them without credentials. The docs page loads Swagger UI from the
drf-spectacular-sidecar package's static files, never from a CDN (SPECTACULAR_SETTINGS
SWAGGER_UI_DIST = "SIDECAR").
"""
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework import routers

from registrar.api import oauth as oauth_api
from registrar.api import views

app_name = "api"


class Router(routers.DefaultRouter):
    """DefaultRouter whose root also lists the views that are not viewsets, and without
    .json format suffixes (an extension number may contain a dot)."""

    include_format_suffixes = False

    def __init__(self, *, extra_root_entries):
        super().__init__()
        self.extra_root_entries = extra_root_entries

    def get_api_root_view(self, api_urls=None):
        entries = {prefix: self.routes[0].name.format(basename=basename) for prefix, _, basename in self.registry}
        return self.APIRootView.as_view(api_root_dict={**entries, **self.extra_root_entries})


router = Router(extra_root_entries={"summary": "summary", "token": "token",
                                    "ua-policy-dry-run": "ua-policy-dry-run"})
router.register("extensions", views.ExtensionViewSet, basename="extension")
router.register("registrations", views.RegistrationViewSet, basename="registration")
router.register("auth-attempts", views.AuthAttemptViewSet, basename="authattempt")
router.register("soft-parameters", views.SoftParameterViewSet, basename="softparameter")
router.register("soft-parameter-changes", views.SoftParameterChangeViewSet, basename="softparameterchange")
router.register("bans", views.BanViewSet, basename="ban")
router.register("trace", views.TraceViewSet, basename="trace")
router.register("jobs", views.JobViewSet, basename="job")
router.register("job-runs", views.JobRunViewSet, basename="jobrun")
router.register("workers", views.WorkerStatusViewSet, basename="worker")
router.register("alert-routes", views.AlertRouteViewSet, basename="alertroute")
router.register("webhooks", views.WebhookViewSet, basename="webhook")
router.register("webhook-deliveries", views.WebhookDeliveryViewSet, basename="webhookdelivery")
router.register("subscriptions", views.SubscriptionViewSet, basename="subscription")
router.register("trunks", views.TrunkViewSet, basename="trunk")
router.register("oauth-servers", oauth_api.OAuthServerViewSet, basename="oauthserver")
router.register("dial-rules", views.DialRuleViewSet, basename="dialrule")
router.register("calls", views.CallViewSet, basename="call")
router.register("alerts", views.AlertViewSet, basename="alert")

urlpatterns = [
    # A file name, without the trailing slash the router would add to an action.
    path("v1/calls/export.csv", views.CallViewSet.as_view({"get": "export"}, **views.CALL_EXPORT),
         name="call-export"),
    path("v1/", include(router.urls)),
    path("v1/summary/", views.SummaryView.as_view(), name="summary"),
    # The dry run concerns 286 alone: a path of its own rather than an action on every parameter.
    path("v1/soft-parameters/286/dry-run/", views.UaPolicyDryRunView.as_view(), name="ua-policy-dry-run"),
    path("v1/token/", views.TokenView.as_view(), name="token"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
]
