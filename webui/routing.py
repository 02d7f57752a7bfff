"""Websocket routes of the web process."""
from django.urls import path

from webui.consumers import LiveConsumer

websocket_urlpatterns = [
    path("ws/live/", LiveConsumer.as_asgi()),
]
