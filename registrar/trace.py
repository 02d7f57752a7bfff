"""The SIP trace, read back: dialogs, ladder diagrams, text and pcap exports.

The SIP worker captures the messages (``services.record_trace``) of the extensions and
source addresses listed in soft parameters 310 and 311. This module turns the stored
:class:`~registrar.models.TracedMessage` rows into what an admin or an integrator
reads, the way a gateway's LMT trace or sngrep shows them:

- :func:`dialogs` — messages grouped by Call-ID, newest first;
- :func:`ladder` — the geometry of a ladder (sequence) diagram, one column per party;
- :func:`text_export` — plain text, each message under a time and direction header;
- :func:`pcap_export` — a classic libpcap capture file that Wireshark, tshark and
  sngrep open;
- :func:`start_tracing` / :func:`stop_tracing` — add or remove an extension or an
  address in 310/311 through ``services.set_soft_parameter`` (audited; the SIP worker
  applies it within half a second).

Passwords never appear in a trace: SIP carries none. An Authorization header holds a
digest response (a hash over the password, the nonce and the request), which still
lets someone holding the trace test password guesses offline, so a trace is as
sensitive as the attempts log.

The pcap file
-------------
The writer uses the standard library only (``struct``). The file is the classic
libpcap format (magic ``0xa1b2c3d4``, microsecond timestamps, little-endian) with link
type ``LINKTYPE_RAW`` (101): each record is an IPv4 or IPv6 packet carrying one UDP
datagram that holds one SIP message. Decisions:

- **Every message is written as a UDP datagram, whatever its transport.** SIP carried
  over TCP, TLS or WebSocket is stored as whole messages; a faithful TCP stream would
  need invented sequence numbers, handshakes and segmenting, and TLS/WS framing cannot
  be rebuilt at all. Wireshark decodes SIP on port 5060 (and by its heuristics on any
  port) either way. The transport the message really used is in its Via header.
- **The phone's side is real, the server's side is a placeholder.** The phone is
  ``peer_ip:peer_port`` as received. The server's address is not recorded (it may
  listen on several), so it is written as :data:`SERVER_IPV4` (192.0.2.1, TEST-NET-1
  of RFC 5737) or :data:`SERVER_IPV6` (2001:db8::1, RFC 3849) — documentation
  addresses that never route — with the local port (5060 when it was not recorded).
- IPv4 headers carry a computed header checksum; UDP checksums are computed for both
  families (mandatory for IPv6, and it keeps Wireshark from flagging the IPv4 ones).
- A message longer than a UDP datagram can carry (65 507 bytes over IPv4, 65 527 over
  IPv6 — SIP over TCP allows more) is cut to fit; the record then says so by an
  original length larger than the captured one.
"""
import ipaddress
import re
import struct

from django.db import transaction
from django.db.models import Count, Max, Min
from django.utils import timezone

from registrar import services
from registrar.models import SoftParameter, TracedMessage

PCAP_MAGIC = 0xA1B2C3D4
PCAP_VERSION = (2, 4)
PCAP_SNAPLEN = 262144
LINKTYPE_RAW = 101
PCAP_MEDIA_TYPE = "application/vnd.tcpdump.pcap"
SERVER_IPV4 = "192.0.2.1"
SERVER_IPV6 = "2001:db8::1"
DEFAULT_SIP_PORT = 5060
IPV4_HEADER = 20
IPV6_HEADER = 40
UDP_HEADER = 8
IP_PROTO_UDP = 17
TTL = 64
MAX_IPV4_PAYLOAD = 65535 - IPV4_HEADER - UDP_HEADER
MAX_IPV6_PAYLOAD = 65535 - UDP_HEADER

SERVER_LABEL = "Regis"
LADDER_MESSAGES = 200


# -- pcap --------------------------------------------------------------------------------
def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071): ones' complement of the ones' complement sum."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _udp(src, dst, src_port: int, dst_port: int, payload: bytes) -> bytes:
    length = UDP_HEADER + len(payload)
    if src.version == 4:
        pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, IP_PROTO_UDP, length)
    else:
        pseudo = src.packed + dst.packed + struct.pack("!I3xB", length, IP_PROTO_UDP)
    header = struct.pack("!HHHH", src_port, dst_port, length, 0)
    checksum = _checksum(pseudo + header + payload) or 0xFFFF  # 0 would mean "none"
    return struct.pack("!HHHH", src_port, dst_port, length, checksum) + payload


def _ipv4(src, dst, identification: int, segment: bytes) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, IPV4_HEADER + len(segment), identification & 0xFFFF,
                         0x4000, TTL, IP_PROTO_UDP, 0, src.packed, dst.packed)  # 0x4000: don't fragment
    return header[:10] + struct.pack("!H", _checksum(header)) + header[12:] + segment


def _ipv6(src, dst, segment: bytes) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(segment), IP_PROTO_UDP, TTL, src.packed, dst.packed) + segment


def _addresses(message):
    peer = ipaddress.ip_address(message.peer_ip)
    if peer.version == 6 and peer.ipv4_mapped:
        peer = peer.ipv4_mapped
    server = ipaddress.ip_address(SERVER_IPV4 if peer.version == 4 else SERVER_IPV6)
    server_port = message.local_port or DEFAULT_SIP_PORT
    if message.direction == "in":
        return peer, server, message.peer_port, server_port
    return server, peer, server_port, message.peer_port


def pcap_header() -> bytes:
    return struct.pack("<IHHiIII", PCAP_MAGIC, *PCAP_VERSION, 0, 0, PCAP_SNAPLEN, LINKTYPE_RAW)


def pcap_record(message, identification: int = 0) -> bytes:
    """One message as a pcap record: record header, IP header, UDP header, the SIP text."""
    src, dst, src_port, dst_port = _addresses(message)
    payload = message.data.encode("utf-8")
    limit = MAX_IPV4_PAYLOAD if src.version == 4 else MAX_IPV6_PAYLOAD
    whole_length = len(payload)
    payload = payload[:limit]
    segment = _udp(src, dst, src_port, dst_port, payload)
    packet = _ipv4(src, dst, identification, segment) if src.version == 4 else _ipv6(src, dst, segment)
    original = len(packet) + whole_length - len(payload)
    moment = message.captured_at
    seconds = int(moment.replace(microsecond=0).timestamp())
    return struct.pack("<IIII", seconds, moment.microsecond, len(packet), original) + packet


def pcap_export(messages):
    """A pcap file, in chunks (for a streaming download): the header, then one record per message."""
    yield pcap_header()
    for identification, message in enumerate(messages, start=1):
        yield pcap_record(message, identification)


def file_name(stem: str, suffix: str) -> str:
    """A download's file name, safe in Content-Disposition (Call-IDs come from phones)."""
    return f"{re.sub(r'[^A-Za-z0-9._-]+', '_', stem)[:80].strip('._') or 'trace'}.{suffix}"


# -- text --------------------------------------------------------------------------------
def _stamp(moment) -> str:
    local = timezone.localtime(moment)
    return f"{local:%Y-%m-%d %H:%M:%S}.{local.microsecond // 1000:03d} {local:%Z}"


def _party(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def text_header(message) -> str:
    peer = _party(message.peer_ip, message.peer_port)
    server = f"{SERVER_LABEL}:{message.local_port or DEFAULT_SIP_PORT}"
    route = f"{peer} -> {server}" if message.direction == "in" else f"{server} -> {peer}"
    verb = "received" if message.direction == "in" else "sent"
    extension = f"  extension {message.extension_number}" if message.extension_number else ""
    return f"==== {_stamp(message.captured_at)}  {verb}  {message.transport.upper()}  {route}{extension}"


def text_export(messages):
    """Plain text, in chunks: each message under a line with its time, direction and parties."""
    for message in messages:
        body = message.data.replace("\r\n", "\n").rstrip("\n")
        yield f"{text_header(message)}\n{body}\n\n"


# -- dialogs and the ladder --------------------------------------------------------------
def dialogs(messages):
    """Per Call-ID: first and last time, message count, the extension, the ids of the first
    and last messages; newest activity first. ``messages`` is a TracedMessage queryset."""
    return (messages.values("call_id")
            .annotate(first_at=Min("captured_at"), last_at=Max("captured_at"), count=Count("id"),
                      first_id=Min("id"), last_id=Max("id"), extension=Max("extension_number"))
            .order_by("-last_at", "-last_id"))


def with_ends(rows):
    """Each dialog row with its first and last message (for the peer and the summaries)."""
    rows = list(rows)
    ids = {row["first_id"] for row in rows} | {row["last_id"] for row in rows}
    by_id = TracedMessage.objects.in_bulk(ids)
    for row in rows:
        row["first"], row["last"] = by_id.get(row["first_id"]), by_id.get(row["last_id"])
    return rows


def short_summary(summary: str) -> str:
    """A start line as a ladder labels it: "REGISTER sip:x", or "401 Unauthorized" for a response."""
    if summary.startswith("SIP/"):
        return summary.split(" ", 1)[1] if " " in summary else summary
    return re.sub(r"\s+SIP/\d\.\d$", "", summary)


COLUMN_GAP = 340
MARGIN_LEFT = 120
MARGIN_RIGHT = 60
HEAD = 56
ROW = 44
LABEL_CHARS = 40


def ladder(messages) -> dict:
    """Geometry of the ladder diagram of ``messages`` (in time order), in SVG user units.

    One column per party: each phone address (ip:port) in order of appearance, then
    Regis. Each message is an arrow from its sender's column to its receiver's, one row
    per message, labelled with its start line; times are left of the rows.
    """
    messages = list(messages)
    peers = list(dict.fromkeys(_party(m.peer_ip, m.peer_port) for m in messages))
    labels = peers + [SERVER_LABEL]
    columns = [{"label": label, "x": MARGIN_LEFT + index * COLUMN_GAP, "server": label == SERVER_LABEL}
               for index, label in enumerate(labels)]
    x_of = {column["label"]: column["x"] for column in columns}
    server_x = x_of[SERVER_LABEL]
    height = HEAD + ROW * (len(messages) + 1)
    start = messages[0].captured_at if messages else None
    arrows = []
    for index, message in enumerate(messages):
        peer_x = x_of[_party(message.peer_ip, message.peer_port)]
        x1, x2 = (peer_x, server_x) if message.direction == "in" else (server_x, peer_x)
        label = short_summary(message.summary)
        y = HEAD + ROW * (index + 1)
        head = -10 if x2 > x1 else 10
        arrows.append({
            "message": message, "y": y, "x1": x1, "x2": x2, "label_x": (x1 + x2) / 2, "label_y": y - 7,
            "head": f"{x2},{y} {x2 + head},{y - 5} {x2 + head},{y + 5}",
            "hit_x": min(x1, x2), "hit_width": abs(x2 - x1), "hit_y": y - ROW + 10,
            "label": label if len(label) <= LABEL_CHARS else label[:LABEL_CHARS - 1] + "…",
            "full_label": message.summary, "time": message.captured_at,
            "offset": (message.captured_at - start).total_seconds(),
        })
    return {
        "columns": columns, "arrows": arrows, "height": height, "time_x": MARGIN_LEFT - 16,
        "width": columns[-1]["x"] + MARGIN_RIGHT, "lifeline_top": HEAD - 16, "lifeline_bottom": height,
        "label_y": HEAD - 28,
    }


def ladder_slice(messages, limit: int | None = None):
    """The last ``limit`` (LADDER_MESSAGES) messages of a dialog in time order, and how many it has."""
    total = messages.count()
    newest = list(messages.order_by("-captured_at", "-id")[:limit or LADDER_MESSAGES])
    return newest[::-1], total


# -- starting and stopping ---------------------------------------------------------------
TARGETS = {"extension": "trace_extensions", "ip": "trace_sources"}


def targets() -> dict:
    """{"extension": [...], "ip": [...]}: what is traced now (soft parameters 310 and 311)."""
    values = services.soft_parameter_values()
    return {kind: list(values.get(name) or []) for kind, name in TARGETS.items()}


def start_tracing(kind: str, value: str, *, user, via: str):
    """Add an extension ("extension") or a source address ("ip") to the trace; the change
    is audited like any soft parameter change. ValidationError (naming "value") on bad input."""
    return _change_targets(kind, lambda items: items if value in items else [*items, value], user=user, via=via)


def stop_tracing(kind: str, value: str, *, user, via: str):
    return _change_targets(kind, lambda items: [item for item in items if item != value], user=user, via=via)


def _change_targets(kind, change, *, user, via):
    # Read, change and write the list in one transaction holding its row, so that two
    # admins starting traces at once both get theirs.
    services.ensure_soft_parameters()
    with transaction.atomic():
        parameter = SoftParameter.objects.select_for_update().get(name=TARGETS[kind])
        return services.set_soft_parameter(parameter.number, change(list(parameter.value or [])), user=user,
                                           via=via)
