"""The web UI's OAuth servers pages (/oauth-servers/): list, create, edit, delete.

They mirror /api/v1/oauth-servers/; registrar.oauth validates and writes, and its
ValidationError is shown on the field it names. The client secret is never rendered back.
"""
from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render

from registrar import oauth
from registrar.choices import OAuthMode
from registrar.models import OAuthServer
from webui.forms import ServiceForm
from webui.views import admin_required, reader_required


def _text(name, **kwargs):
    model_field = OAuthServer._meta.get_field(name)
    return forms.CharField(max_length=model_field.max_length, required=not model_field.blank,
                           help_text=model_field.help_text, **kwargs)


class OAuthServerForm(ServiceForm):
    name = _text("name", widget=forms.TextInput(attrs={"autocomplete": "off"}))
    mode = forms.ChoiceField(choices=OAuthMode.choices, initial=OAuthMode.INTROSPECTION)
    introspection_url = _text("introspection_url", label="Introspection URL",
                              widget=forms.TextInput(attrs={"placeholder": "https://auth.example.com/o/introspect/"}))
    client_id = _text("client_id", label="Client id")
    client_secret = forms.CharField(required=False, strip=False, max_length=500, label="Client secret",
                                    widget=forms.PasswordInput(render_value=False,
                                                               attrs={"autocomplete": "new-password"}))
    timeout_seconds = forms.FloatField(initial=2, label="Timeout (seconds)",
                                       help_text=OAuthServer._meta.get_field("timeout_seconds").help_text)
    verify_tls = forms.BooleanField(required=False, initial=True, label="Verify TLS certificate")
    jwks_url = _text("jwks_url", label="JWKS URL")
    issuer = _text("issuer")
    audience = _text("audience")
    authz_server = _text("authz_server", label="authz_server in challenges")
    required_scope = _text("required_scope")
    enabled = forms.BooleanField(required=False, initial=True)

    def __init__(self, *args, editing=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["client_secret"].help_text = (
            "Leave empty to keep the stored secret." if editing else
            "HTTP Basic password of the introspection call; stored encrypted, never shown again.")

    def service_fields(self) -> dict:
        fields = dict(self.cleaned_data)
        fields["client_secret"] = fields["client_secret"] or None
        return fields


@reader_required
def oauth_server_list(request):
    servers = OAuthServer.objects.order_by("name")
    return render(request, "webui/oauth_servers.html", {"servers": servers})


@admin_required
def oauth_server_create(request):
    form = OAuthServerForm(request.POST if request.method == "POST" else None)
    if form.is_bound and form.is_valid():
        fields = form.service_fields()
        try:
            server = oauth.create_server(client_secret=fields.pop("client_secret") or "", **fields)
        except ValidationError as error:
            form.add_service_error(error)
        else:
            messages.success(request, f"OAuth server {server.name} created.")
            return redirect("oauth-servers")
    return render(request, "webui/oauth_server_form.html", {"form": form, "server": None})


@admin_required
def oauth_server_edit(request, pk):
    server = get_object_or_404(OAuthServer, pk=pk)
    if request.method == "POST":
        form = OAuthServerForm(request.POST, editing=True)
        if form.is_valid():
            try:
                oauth.update_server(server, **form.service_fields())
            except ValidationError as error:
                form.add_service_error(error)
            else:
                messages.success(request, f"OAuth server {server.name} saved.")
                return redirect("oauth-servers")
    else:
        form = OAuthServerForm(editing=True, initial={name: getattr(server, name) for name in oauth.EDITABLE_FIELDS})
    return render(request, "webui/oauth_server_form.html", {"form": form, "server": server})


@admin_required
def oauth_server_delete(request, pk):
    server = get_object_or_404(OAuthServer, pk=pk)
    error = None
    if request.method == "POST":
        try:
            oauth.delete_server(server)
        except ValidationError as refused:
            error = " ".join(refused.messages)
        else:
            messages.success(request, f"OAuth server {server.name} deleted.")
            return redirect("oauth-servers")
    return render(request, "webui/oauth_server_delete.html",
                  {"server": server, "error": error, "users": server.extensions.count()})
