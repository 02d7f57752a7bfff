"""The browsers' live websocket: who may connect, and events relayed into it."""
import asyncio
import json
import socket
import tempfile
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Group

from pbx.asgi import application
from registrar import events, live

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def relay_socket(settings):
    settings.LIVE_RELAY_SOCKET = str(Path(tempfile.mkdtemp(dir="/tmp")) / "live.sock")
    return settings.LIVE_RELAY_SOCKET


def communicator_for(user):
    communicator = WebsocketCommunicator(application, "/ws/live/")
    if user is not None:
        communicator.scope["user"] = user
    return communicator


def user_in(django_user_model, group, name):
    user = django_user_model.objects.create_user(name, password="pw")
    if group:
        user.groups.add(Group.objects.get(name=group))
    return user


@pytest.mark.parametrize("group", [None, "viewer", "admin"])
def test_only_readers_may_connect(django_user_model, relay_socket, group):
    user = user_in(django_user_model, group, "someone")

    async def scenario():
        communicator = communicator_for(user)
        connected, code = await communicator.connect()
        await communicator.disconnect()
        return connected, code

    connected, code = async_to_sync(scenario)()
    assert connected is (group is not None)
    if group is None:
        assert code == 4403


def test_anonymous_is_refused(relay_socket):
    async def scenario():
        communicator = WebsocketCommunicator(application, "/ws/live/")
        connected, _ = await communicator.connect()
        return connected

    assert async_to_sync(scenario)() is False


def test_events_from_another_process_reach_the_browser_through_the_relay(django_user_model, relay_socket):
    viewer = user_in(django_user_model, "viewer", "watcher")
    event = events.registration_changed("registered", "1001", "sip:1001@192.0.2.1", "192.0.2.1", 5060, "udp",
                                        "Phone", 1.8e9)

    async def scenario():
        communicator = communicator_for(viewer)
        connected, _ = await communicator.connect()
        assert connected
        # As the SIP worker does: a datagram to the relay socket, from outside the web process's layer.
        sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sender.sendto(json.dumps([event]).encode(), relay_socket)
        sender.close()
        message = await communicator.receive_json_from(timeout=5)
        await communicator.disconnect()
        return message

    assert async_to_sync(scenario)() == {"events": [event]}


def test_a_soft_parameter_change_is_announced_after_commit(django_user_model, relay_socket):
    from registrar import services

    admin = user_in(django_user_model, "admin", "boss")

    async def scenario():
        communicator = communicator_for(admin)
        connected, _ = await communicator.connect()
        assert connected
        await sync_to_async(services.set_soft_parameter)(286, True, user=admin, via="web")
        message = await communicator.receive_json_from(timeout=5)
        await communicator.disconnect()
        return message

    message = async_to_sync(scenario)()
    assert message["events"][0]["type"] == "softparam"
    assert message["events"][0]["number"] == 286 and message["events"][0]["by"] == "boss"


def test_publishing_with_nobody_listening_is_harmless(relay_socket):
    live.publish([{"type": "registration"}])
    assert not Path(relay_socket).exists()
    asyncio.run(asyncio.sleep(0))


def redis_reachable():
    import socket as sockets

    try:
        with sockets.create_connection(("127.0.0.1", 6379), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not redis_reachable(), reason="no Redis on 127.0.0.1:6379")
def test_with_redis_events_cross_processes_through_channels_redis(django_user_model, settings):
    """The production shape: producers group_send to channels_redis, no relay socket."""
    from channels.layers import channel_layers

    settings.LIVE_RELAY_SOCKET = ""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
                                           "CONFIG": {"hosts": ["redis://127.0.0.1:6379/15"],
                                                      "prefix": "regis-test"}}}
    channel_layers.backends.clear()
    viewer = user_in(django_user_model, "viewer", "watcher")
    event = events.registration_changed("registered", "1001", "sip:1001@192.0.2.1", "192.0.2.1", 5060, "udp",
                                        "Phone", 1.8e9)
    try:
        async def scenario():
            communicator = communicator_for(viewer)
            connected, _ = await communicator.connect()
            assert connected
            # The SIP worker publishes from its own loop; here the producer is another thread.
            await sync_to_async(live.publish, thread_sensitive=False)([event])
            message = await communicator.receive_json_from(timeout=5)
            await communicator.disconnect()
            return message

        assert async_to_sync(scenario)() == {"events": [event]}
    finally:
        channel_layers.backends.clear()


def test_connected_browsers_are_counted_for_metrics(django_user_model, relay_socket):
    viewer = user_in(django_user_model, "viewer", "counted")

    async def scenario():
        before = live.connected_clients
        communicator = communicator_for(viewer)
        await communicator.connect()
        during = live.connected_clients
        await communicator.disconnect()
        return before, during, live.connected_clients

    before, during, after = async_to_sync(scenario)()
    assert (during - before, after - before) == (1, 0)
