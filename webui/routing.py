"""Websocket routes of the web process."""
from django.urls import path, re_path

from webui.consumers import LiveConsumer
from webui.sip_consumer import SipConsumer

websocket_urlpatterns = [
    path("ws/live/", LiveConsumer.as_asgi()),
    # RFC 7118 gives no path; phones are configured with ws(s)://HOST/ws/sip.
    re_path(r"^ws/sip/?$", SipConsumer.as_asgi()),
]
