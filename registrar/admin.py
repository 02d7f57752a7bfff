"""Django admin for the registrar's tables; writes go through the services."""
from django import forms
from django.contrib import admin, messages

from registrar import services
from registrar.models import AuthAttempt, Ban, Binding, Extension, SoftParameter


class ExtensionForm(forms.ModelForm):
    password = forms.CharField(required=False, widget=forms.PasswordInput(render_value=False),
                               help_text="Leave empty to keep the current password (or, for a new extension, "
                                         "to generate one, shown once).")

    class Meta:
        model = Extension
        fields = ["number", "display_name", "enabled", "max_contacts", "auth_mode", "oauth_server", "bearer_methods"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Left out of a form post, they keep their current (or default) values.
        for name in ("auth_mode", "bearer_methods"):
            self.fields[name].required = False


@admin.register(Extension)
class ExtensionAdmin(admin.ModelAdmin):
    form = ExtensionForm
    list_display = ["number", "display_name", "enabled", "max_contacts", "updated_at"]
    search_fields = ["number", "display_name"]
    list_filter = ["enabled"]

    def save_model(self, request, obj, form, change):
        password = form.cleaned_data.get("password") or None
        if change:
            services.update_extension(obj, display_name=obj.display_name, enabled=obj.enabled,
                                      max_contacts=obj.max_contacts)
            oauth.set_extension_auth(obj, auth_mode=obj.auth_mode, oauth_server=obj.oauth_server,
                                     bearer_methods=obj.bearer_methods)
            if password:
                services.set_password(obj, password)
            return
        created, generated = services.create_extension(obj.number, password, obj.display_name,
                                                       obj.max_contacts, obj.enabled)
        oauth.set_extension_auth(created, auth_mode=obj.auth_mode, oauth_server=obj.oauth_server,
                                 bearer_methods=obj.bearer_methods)
        obj.pk = created.pk
        if generated:
            messages.warning(request, f"Generated SIP password for {created.number}: {generated} "
                                      "(shown once; it is stored only as hashes).")

    def delete_model(self, request, obj):
        services.delete_extension(obj)


@admin.register(Binding)
class BindingAdmin(admin.ModelAdmin):
    list_display = ["extension", "contact_uri", "source_ip", "source_port", "transport", "user_agent",
                    "expires_at", "last_refreshed"]
    list_filter = ["transport"]
    search_fields = ["extension__number", "contact_uri", "source_ip", "user_agent"]
    readonly_fields = [f.name for f in Binding._meta.fields]

    def has_add_permission(self, request):
        return False

    def delete_model(self, request, obj):
        services.remove_binding(obj)


@admin.register(SoftParameter)
class SoftParameterAdmin(admin.ModelAdmin):
    list_display = ["number", "name", "value", "default", "updated_at"]
    readonly_fields = ["number", "name", "kind", "default", "minimum", "maximum", "description", "updated_at"]
    fields = readonly_fields[:2] + ["value"] + readonly_fields[2:]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        services.set_soft_parameter(obj.number, obj.value, user=request.user, via="admin")


@admin.register(AuthAttempt)
class AuthAttemptAdmin(admin.ModelAdmin):
    list_display = ["created_at", "source_ip", "extension_number", "auth_username", "user_agent", "reason",
                    "status"]
    list_filter = ["reason", "outcome", "transport"]
    search_fields = ["extension_number", "auth_username", "source_ip", "user_agent"]
    readonly_fields = [f.name for f in AuthAttempt._meta.fields] + ["explanation"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Ban)
class BanAdmin(admin.ModelAdmin):
    list_display = ["ip", "created_at", "expires_at", "failures", "detail", "lifted_at", "lifted_by"]
    search_fields = ["ip"]
    readonly_fields = [f.name for f in Ban._meta.fields]
    actions = ["lift"]

    def has_add_permission(self, request):
        return False

    @admin.action(description="Lift the selected bans")
    def lift(self, request, queryset):
        for ban in queryset:
            services.lift_ban(ban, by=request.user.get_username())


# -- operations: alert routing, webhooks, and what happened (read-only) ----------------
from django.core.exceptions import ValidationError  # noqa: E402

from registrar.models import (Alert, AlertEvent, AlertRoute, JobRun, Webhook, WebhookDelivery,  # noqa: E402
                              WorkerStatus)


class _ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class AlertRouteForm(forms.ModelForm):
    class Meta:
        model = AlertRoute
        fields = ["event", "emails", "enabled"]

    def clean_emails(self):
        try:
            return services.clean_emails(self.cleaned_data["emails"])
        except ValidationError as error:
            raise ValidationError(error.message_dict["emails"]) from None


@admin.register(AlertRoute)
class AlertRouteAdmin(admin.ModelAdmin):
    form = AlertRouteForm
    list_display = ["event", "emails", "enabled", "updated_at"]

    def get_readonly_fields(self, request, obj=None):
        return ["event"] if obj is not None else []

    def save_model(self, request, obj, form, change):
        route = services.set_alert_route(obj.event, obj.emails, obj.enabled)
        obj.pk = route.pk

    def delete_model(self, request, obj):
        services.delete_alert_route(obj)


class WebhookForm(forms.ModelForm):
    url = forms.URLField(max_length=500, assume_scheme="https")
    events = forms.MultipleChoiceField(choices=AlertEvent.choices, widget=forms.CheckboxSelectMultiple)
    # Write-only: never rendered back; empty keeps the current secret (or generates one for a new webhook).
    secret = forms.CharField(required=False, max_length=128, widget=forms.PasswordInput(render_value=False),
                             help_text="The key of the X-Regis-Signature HMAC. Leave empty to keep the current one "
                                       "(a new webhook gets a generated one).")

    class Meta:
        model = Webhook
        fields = ["name", "url", "secret", "events", "enabled"]


@admin.register(Webhook)
class WebhookAdmin(admin.ModelAdmin):
    form = WebhookForm
    list_display = ["__str__", "url", "events", "enabled", "updated_at"]
    list_filter = ["enabled"]

    def save_model(self, request, obj, form, change):
        fields = {name: form.cleaned_data[name] for name in ("name", "url", "secret", "events", "enabled")}
        if change:
            if not fields["secret"]:
                del fields["secret"]
                # The form's instance already holds the blank; keep the stored secret.
                obj.secret = type(obj).objects.get(pk=obj.pk).secret
            services.update_webhook(obj, **fields)
            return
        webhook, _ = services.create_webhook(fields.pop("url"), fields.pop("events"), **fields)
        obj.pk = webhook.pk
        if not form.cleaned_data["secret"]:
            messages.warning(request, f"Generated webhook secret (configure the receiver with it): {webhook.secret}")

    def delete_model(self, request, obj):
        services.delete_webhook(obj)


@admin.register(JobRun)
class JobRunAdmin(_ReadOnlyAdmin):
    list_display = ["name", "started_at", "duration", "outcome", "result"]
    list_filter = ["outcome", "name"]


@admin.register(Alert)
class AlertAdmin(_ReadOnlyAdmin):
    list_display = ["created_at", "event", "subject", "dispatched_at", "emailed_to", "email_error"]
    list_filter = ["event"]
    search_fields = ["subject", "target"]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(_ReadOnlyAdmin):
    list_display = ["created_at", "webhook", "alert", "attempt", "status_code", "error", "succeeded", "will_retry"]
    list_filter = ["succeeded", "webhook"]


@admin.register(WorkerStatus)
class WorkerStatusAdmin(_ReadOnlyAdmin):
    list_display = ["hostname", "pid", "listeners", "started_at", "last_seen", "credentials", "requests_per_second",
                    "received", "errors"]


# -- outbound trunks: settings through registrar.trunks; status and history read-only ----
from registrar import trunks  # noqa: E402
from registrar.models import Trunk, TrunkAttempt, TrunkStatus  # noqa: E402


class TrunkForm(forms.ModelForm):
    # Write-only: never rendered back; empty keeps the stored password.
    password = forms.CharField(required=False, strip=False, widget=forms.PasswordInput(render_value=False),
                               help_text="Stored encrypted. Leave empty to keep the current one (required for a "
                                         "new trunk).")

    class Meta:
        model = Trunk
        fields = ["name", "registrar_uri", "aor_user", "aor_domain", "auth_username", "password", "expected_realm",
                  "expires", "outbound_proxy", "contact_user", "enabled", "register"]

    def clean(self):
        data = super().clean()
        # The service's own checks, so that a refusal is shown on the form rather than as an error page.
        for field in ("registrar_uri", "outbound_proxy"):
            if data.get(field):
                try:
                    trunks.parse_target(data[field], field)
                except ValidationError as error:
                    self.add_error(field, error.message_dict[field])
        if self.instance.pk is None and not data.get("password"):
            self.add_error("password", "A trunk needs the password the upstream server expects.")
        return data


class TrunkStatusInline(admin.StackedInline):
    model = TrunkStatus
    can_delete = False
    readonly_fields = ["state", "registered_until", "last_status", "last_phrase", "cause", "detail",
                       "next_attempt_at", "updated_at"]
    fields = readonly_fields

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class TrunkAttemptInline(admin.TabularInline):
    model = TrunkAttempt
    can_delete = False
    extra = 0
    readonly_fields = ["at", "status", "phrase", "cause", "detail", "expires"]
    fields = readonly_fields

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Trunk)
class TrunkAdmin(admin.ModelAdmin):
    form = TrunkForm
    list_display = ["name", "registrar_uri", "aor_user", "enabled", "state", "updated_at"]
    list_filter = ["enabled", "status__state"]
    search_fields = ["name", "registrar_uri", "aor_user"]
    inlines = [TrunkStatusInline, TrunkAttemptInline]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("status")

    @admin.display(description="state")
    def state(self, trunk):
        status = getattr(trunk, "status", None)
        return status.get_state_display() if status else "—"

    def save_model(self, request, obj, form, change):
        fields = {name: form.cleaned_data[name] for name in trunks.EDITABLE_FIELDS if name in form.cleaned_data}
        password = form.cleaned_data["password"] or None
        if change:
            trunks.update_trunk(obj, password=password, **fields)
            return
        obj.pk = trunks.create_trunk(password=password or "", **fields).pk

    def delete_model(self, request, obj):
        trunks.delete_trunk(obj)

    def delete_queryset(self, request, queryset):
        for trunk in queryset:
            trunks.delete_trunk(trunk)


@admin.register(TrunkAttempt)
class TrunkAttemptAdmin(_ReadOnlyAdmin):
    list_display = ["at", "trunk", "status", "phrase", "cause", "detail", "expires"]
    list_filter = ["cause", "trunk"]


# -- OAuth servers (issue 6): writes through registrar.oauth; the secret is write-only ----
from registrar import oauth  # noqa: E402
from registrar.models import OAuthServer  # noqa: E402


class OAuthServerForm(forms.ModelForm):
    client_secret = forms.CharField(required=False, strip=False, widget=forms.PasswordInput(render_value=False),
                                    help_text="Stored encrypted. Leave empty to keep the current one.")

    class Meta:
        model = OAuthServer
        fields = list(oauth.EDITABLE_FIELDS[:4]) + ["client_secret"] + list(oauth.EDITABLE_FIELDS[4:])


@admin.register(OAuthServer)
class OAuthServerAdmin(admin.ModelAdmin):
    form = OAuthServerForm
    list_display = ["name", "mode", "introspection_url", "jwks_url", "enabled", "updated_at"]
    list_filter = ["mode", "enabled"]

    def save_model(self, request, obj, form, change):
        fields = {name: form.cleaned_data[name] for name in oauth.EDITABLE_FIELDS}
        secret = form.cleaned_data["client_secret"] or None
        if change:
            oauth.update_server(obj, client_secret=secret, **fields)
            return
        obj.pk = oauth.create_server(client_secret=secret or "", **fields).pk

    def delete_model(self, request, obj):
        oauth.delete_server(obj)
