"""Websocket routes of the web process (the live dashboard arrives with the dashboard issue)."""
websocket_urlpatterns = []
