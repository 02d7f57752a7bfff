"""The web UI's addresses; each page mirrors a resource of the API (/api/v1/...)."""
from django.contrib.auth import views as auth_views
from django.urls import path

from webui import oauth_views, views

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(template_name="webui/login.html", redirect_authenticated_user=True),
         name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", views.dashboard, name="dashboard"),
    path("extensions/", views.extensions, name="extensions"),
    # Before the extension page, which it shadows for an extension numbered "new" (a
    # valid number): that one is managed through the API or the Django admin.
    path("extensions/new/", views.extension_create, name="extension-create"),
    path("extensions/<str:number>/", views.extension_detail, name="extension"),
    path("extensions/<str:number>/diagnosis/", views.extension_diagnosis, name="extension-diagnosis"),
    path("extensions/<str:number>/edit/", views.extension_edit, name="extension-edit"),
    path("extensions/<str:number>/password/", views.extension_password, name="extension-password"),
    path("extensions/<str:number>/enable/", views.extension_enable, name="extension-enable"),
    path("extensions/<str:number>/disable/", views.extension_disable, name="extension-disable"),
    path("extensions/<str:number>/delete/", views.extension_delete, name="extension-delete"),
    path("registrations/", views.registrations, name="registrations"),
    path("registrations/<int:pk>/unregister/", views.binding_remove, name="binding-remove"),
    path("attempts/", views.attempts, name="attempts"),
    path("attempts/export.csv", views.attempts_csv, name="attempts-csv"),
    path("bans/", views.bans, name="bans"),
    path("bans/<int:pk>/lift/", views.ban_lift, name="ban-lift"),
    # The trace's addresses leave /trace/<anything>/ to Call-IDs, which may hold any
    # character (sent URL-encoded): starting and stopping are POSTs to /trace/ itself,
    # and the whole-trace downloads sit beside it.
    path("trace/", views.trace_list, name="trace"),
    path("trace.txt", views.trace_text, name="trace-text"),
    path("trace.pcap", views.trace_pcap, name="trace-pcap"),
    path("trace/<path:call_id>.txt", views.trace_dialog_text, name="trace-dialog-text"),
    path("trace/<path:call_id>.pcap", views.trace_dialog_pcap, name="trace-dialog-pcap"),
    path("trace/<path:call_id>/", views.trace_dialog, name="trace-dialog"),
    path("settings/", views.soft_parameters, name="soft-parameters"),
    path("settings/<int:number>/", views.soft_parameter_set, name="soft-parameter-set"),
    path("operations/", views.operations, name="operations"),
    path("operations/jobs/<str:name>/run/", views.job_run, name="job-run"),
    path("operations/test-alert/", views.test_alert, name="test-alert"),
    path("operations/routing/", views.alert_routing, name="alert-routing"),
    path("operations/routes/new/", views.alert_route_create, name="alert-route-create"),
    path("operations/routes/<int:pk>/edit/", views.alert_route_edit, name="alert-route-edit"),
    path("operations/routes/<int:pk>/delete/", views.alert_route_delete, name="alert-route-delete"),
    path("operations/webhooks/new/", views.webhook_create, name="webhook-create"),
    path("operations/webhooks/<int:pk>/edit/", views.webhook_edit, name="webhook-edit"),
    path("operations/webhooks/<int:pk>/secret/", views.webhook_secret, name="webhook-secret"),
    path("operations/webhooks/<int:pk>/delete/", views.webhook_delete, name="webhook-delete"),
    path("trunks/", views.trunk_list, name="trunks"),
    path("trunks/new/", views.trunk_create, name="trunk-create"),
    path("trunks/<int:pk>/", views.trunk_detail, name="trunk"),
    path("trunks/<int:pk>/edit/", views.trunk_edit, name="trunk-edit"),
    path("trunks/<int:pk>/delete/", views.trunk_delete, name="trunk-delete"),
    path("trunks/<int:pk>/register-now/", views.trunk_register_now, name="trunk-register-now"),
    path("trunks/<int:pk>/enable/", views.trunk_enable, name="trunk-enable"),
    path("trunks/<int:pk>/disable/", views.trunk_disable, name="trunk-disable"),
    path("oauth-servers/", oauth_views.oauth_server_list, name="oauth-servers"),
    path("oauth-servers/new/", oauth_views.oauth_server_create, name="oauth-server-create"),
    path("oauth-servers/<int:pk>/edit/", oauth_views.oauth_server_edit, name="oauth-server-edit"),
    path("oauth-servers/<int:pk>/delete/", oauth_views.oauth_server_delete, name="oauth-server-delete"),
    path("token/", views.api_token, name="api-token"),
]
