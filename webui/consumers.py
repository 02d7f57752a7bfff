"""The browser's live websocket: every event of :mod:`registrar.events`, to readers only."""
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from registrar import live
from registrar.events import GROUP
from registrar.roles import can_read
from webui import relay

FORBIDDEN = 4403


class LiveConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        if not await database_sync_to_async(can_read)(self.scope["user"]):
            await self.close(code=FORBIDDEN)
            return
        await relay.ensure_started()
        await self.channel_layer.group_add(GROUP, self.channel_name)
        await self.accept()
        self.counted = True
        live.client_connected()

    async def disconnect(self, code):
        if getattr(self, "counted", False):
            live.client_disconnected()
        await self.channel_layer.group_discard(GROUP, self.channel_name)

    async def live_events(self, message):
        await self.send_json({"events": message["events"]})
