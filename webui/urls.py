"""The web UI's addresses; each page mirrors a resource of the API (/api/v1/...)."""
from django.contrib.auth import views as auth_views
from django.urls import path

from webui import views

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
    path("extensions/<str:number>/edit/", views.extension_edit, name="extension-edit"),
    path("extensions/<str:number>/password/", views.extension_password, name="extension-password"),
    path("extensions/<str:number>/enable/", views.extension_enable, name="extension-enable"),
    path("extensions/<str:number>/disable/", views.extension_disable, name="extension-disable"),
    path("extensions/<str:number>/delete/", views.extension_delete, name="extension-delete"),
    path("registrations/", views.registrations, name="registrations"),
    path("registrations/<int:pk>/unregister/", views.binding_remove, name="binding-remove"),
    path("attempts/", views.attempts, name="attempts"),
    path("attempts/export.csv", views.attempts_csv, name="attempts-csv"),
    path("settings/", views.soft_parameters, name="soft-parameters"),
    path("settings/<int:number>/", views.soft_parameter_set, name="soft-parameter-set"),
    path("token/", views.api_token, name="api-token"),
]
