"""Web pages; each view unpacks the request, asks the services or models, renders."""
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.utils import timezone

from registrar.models import AuthAttempt, Binding, Extension


@login_required
def home(request):
    now = timezone.now()
    context = {
        "sip_domain": settings.SIP_DOMAIN,
        "extensions": Extension.objects.count(),
        "registered": Binding.objects.filter(expires_at__gt=now).values("extension").distinct().count(),
        "bindings": Binding.objects.filter(expires_at__gt=now).select_related("extension")[:50],
        "failures_last_hour": AuthAttempt.objects.filter(created_at__gte=now - timezone.timedelta(hours=1)).count(),
        "attempts": AuthAttempt.objects.all()[:20],
    }
    return render(request, "webui/home.html", context)
