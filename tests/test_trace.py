"""The SIP trace for the admin and the integrator: starting and stopping it, the dialogs,
the ladder diagram, the text and pcap downloads (parsed back with struct, and read by
tshark when it is installed) and the API.

Traced messages are stored with ``services.record_trace``, the way the SIP worker stores them.
"""
import ipaddress
import re
import shutil
import struct
import subprocess
import time
from datetime import datetime, timezone as dt_timezone
from types import SimpleNamespace

import pytest
from rest_framework.test import APIClient

from registrar import services, trace
from registrar.models import SoftParameter, SoftParameterChange, TracedMessage
from registrar.sip.core import Source, TraceMessage

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_login_hashes")]

CALL = "a84b4c76e66710@pc33.example.com"
PHONE = ("192.0.2.10", 5062)
PAGES = ["/trace/", f"/trace/{CALL}/", f"/trace/{CALL}.txt", f"/trace/{CALL}.pcap", "/trace.txt", "/trace.pcap"]


# -- fixtures and helpers ---------------------------------------------------------------
def request(method="REGISTER", *, call_id=CALL, cseq=1, user="1001", user_agent="Yealink SIP-T46S",
            authorization=None, phone=PHONE, transport="UDP"):
    ip, port = phone
    host = f"[{ip}]" if ":" in ip else ip
    lines = [f"{method} sip:regis.test SIP/2.0", f"Via: SIP/2.0/{transport} {host}:{port};branch=z9hG4bK{cseq}",
             "Max-Forwards: 70", f"From: <sip:{user}@regis.test>;tag=1928", f"To: <sip:{user}@regis.test>",
             f"Call-ID: {call_id}", f"CSeq: {cseq} {method}", f"Contact: <sip:{user}@{host}:{port}>"]
    if authorization:
        lines.append(f"Authorization: {authorization}")
    lines += [f"User-Agent: {user_agent}", "Content-Length: 0"]
    return "\r\n".join(lines) + "\r\n\r\n"


def response(status, *, call_id=CALL, cseq=1, phone=PHONE):
    ip, port = phone
    host = f"[{ip}]" if ":" in ip else ip
    return "\r\n".join([f"SIP/2.0 {status}", f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{cseq};received={ip}",
                        "From: <sip:1001@regis.test>;tag=1928", "To: <sip:1001@regis.test>;tag=as1",
                        f"Call-ID: {call_id}", f"CSeq: {cseq} REGISTER", "Content-Length: 0"]) + "\r\n\r\n"


DIGEST = ('Digest username="1001", realm="regis.test", nonce="MTcw", uri="sip:regis.test", qop=auth, nc=00000001, '
          'cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", algorithm=MD5')


def store(*messages, at=None, transport="udp", phone=PHONE, extension="1001"):
    """Store (direction, text) pairs as the worker does, one millisecond apart."""
    start = time.time() if at is None else at
    services.record_trace([TraceMessage(start + index / 1000, direction, Source(transport, phone[0], phone[1]),
                                        extension, text.encode())
                           for index, (direction, text) in enumerate(messages)])


def registration(call_id=CALL, *, at=None, phone=PHONE, extension="1001", transport="udp"):
    """REGISTER → 401 → REGISTER with Authorization → 200, as traced."""
    store(("in", request(call_id=call_id, phone=phone, user=extension)),
          ("out", response("401 Unauthorized", call_id=call_id, phone=phone)),
          ("in", request(call_id=call_id, cseq=2, phone=phone, user=extension, authorization=DIGEST)),
          ("out", response("200 OK", call_id=call_id, cseq=2, phone=phone)),
          at=at, phone=phone, extension=extension, transport=transport)


def html(response) -> str:
    return response.content.decode()


def body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


# -- the pcap, parsed back --------------------------------------------------------------
def ones_complement_sum_ok(data: bytes) -> bool:
    """A header or segment whose checksum is right sums to 0xFFFF."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


def parse_pcap(data: bytes) -> list[dict]:
    magic, major, minor, zone, sigfigs, snaplen, linktype = struct.unpack("<IHHiIII", data[:24])
    assert (magic, major, minor, zone, sigfigs, linktype) == (0xA1B2C3D4, 2, 4, 0, 0, 101)
    packets, offset = [], 24
    while offset < len(data):
        seconds, micros, captured, original = struct.unpack("<IIII", data[offset:offset + 16])
        packet = data[offset + 16:offset + 16 + captured]
        assert len(packet) == captured <= snaplen and original >= captured and micros < 1_000_000
        offset += 16 + captured
        version = packet[0] >> 4
        if version == 4:
            assert packet[0] & 0x0F == 5  # 20-byte header
            total_length, protocol = struct.unpack("!H", packet[2:4])[0], packet[9]
            assert total_length == len(packet) and protocol == 17 and ones_complement_sum_ok(packet[:20])
            src, dst = ipaddress.ip_address(packet[12:16]), ipaddress.ip_address(packet[16:20])
            segment, pseudo_family = packet[20:], (packet[12:20], 17)
        else:
            assert version == 6
            payload_length, next_header = struct.unpack("!HB", packet[4:7])
            assert payload_length == len(packet) - 40 and next_header == 17
            src, dst = ipaddress.ip_address(packet[8:24]), ipaddress.ip_address(packet[24:40])
            segment, pseudo_family = packet[40:], (packet[8:40], 17)
        src_port, dst_port, udp_length, checksum = struct.unpack("!HHHH", segment[:8])
        assert udp_length == len(segment)
        addresses, protocol = pseudo_family
        if version == 4:
            pseudo = addresses + struct.pack("!BBH", 0, protocol, udp_length)
        else:
            pseudo = addresses + struct.pack("!I3xB", udp_length, protocol)
        assert checksum != 0 and ones_complement_sum_ok(pseudo + segment)
        packets.append({"time": seconds + micros / 1e6, "src": str(src), "dst": str(dst), "src_port": src_port,
                        "dst_port": dst_port, "payload": segment[8:], "original": original, "captured": captured})
    assert offset == len(data)
    return packets


# -- roles ------------------------------------------------------------------------------
@pytest.mark.parametrize("url", PAGES)
def test_the_trace_pages_need_a_login_and_a_role(client, nobody_client, url):
    registration()
    anonymous = client.__class__()
    assert anonymous.get(url).status_code == 302
    assert nobody_client.get(url).status_code == 403


@pytest.mark.parametrize("url", PAGES)
def test_viewers_read_the_trace(viewer_client, url):
    registration()
    assert viewer_client.get(url).status_code == 200


def test_viewers_cannot_start_a_trace(viewer_client):
    response = viewer_client.post("/trace/", {"action": "start", "kind": "extension", "value": "1001"})
    assert response.status_code == 403
    assert SoftParameter.objects.get(number=310).value == []
    assert 'id="trace-start-extension"' not in html(viewer_client.get("/trace/"))


# -- starting and stopping --------------------------------------------------------------
def test_starting_and_stopping_an_extension_changes_310_with_an_audit_row(admin_client):
    response = admin_client.post("/trace/", {"action": "start", "kind": "extension", "value": "1001"}, follow=True)
    assert response.redirect_chain[-1][0] == "/trace/"
    assert SoftParameter.objects.get(number=310).value == ["1001"]
    change = SoftParameterChange.objects.get(parameter_id=310)
    assert (change.actor, change.via, change.old_value, change.new_value) == ("alice", "web", [], ["1001"])
    page = html(response)
    assert '<li data-kind="extension" data-value="1001">' in page and "Tracing extension 1001" in page

    admin_client.post("/trace/", {"action": "start", "kind": "extension", "value": "1002"})
    admin_client.post("/trace/", {"action": "start", "kind": "extension", "value": "1001"})  # already: no change
    assert SoftParameter.objects.get(number=310).value == ["1001", "1002"]
    admin_client.post("/trace/", {"action": "stop", "kind": "extension", "value": "1001"})
    assert SoftParameter.objects.get(number=310).value == ["1002"]
    assert SoftParameterChange.objects.filter(parameter_id=310).count() == 3
    assert services.current_policy().trace_extensions == frozenset({"1002"})


def test_starting_and_stopping_a_source_address_changes_311(admin_client):
    admin_client.post("/trace/", {"action": "start", "kind": "ip", "value": "2001:DB8::0:5"})
    assert SoftParameter.objects.get(number=311).value == ["2001:db8::5"]  # as the worker sees addresses
    admin_client.post("/trace/", {"action": "start", "kind": "ip", "value": "192.0.2.10"})
    admin_client.post("/trace/", {"action": "stop", "kind": "ip", "value": "2001:db8::5"})
    assert SoftParameter.objects.get(number=311).value == ["192.0.2.10"]
    change = SoftParameterChange.objects.filter(parameter_id=311).first()
    assert change.via == "web" and change.new_value == ["192.0.2.10"]


@pytest.mark.parametrize("kind, value, message", [("ip", "192.0.2.300", "is not an IPv4 or IPv6 address"),
                                                  ("extension", "10 01", "An extension number is")])
def test_a_bad_target_is_refused_and_changes_nothing(admin_client, kind, value, message):
    response = admin_client.post("/trace/", {"action": "start", "kind": kind, "value": value})
    assert response.status_code == 200 and message in html(response)
    assert not SoftParameterChange.objects.filter(parameter_id__in=[310, 311]).exists()


# -- the dialogs and the ladder ---------------------------------------------------------
def test_the_trace_lists_dialogs_by_call_id_newest_first(viewer_client):
    registration("older@host", at=time.time() - 60)
    registration(CALL, at=time.time() - 30)
    store(("in", request("OPTIONS", call_id="other@host", user="2002")), extension="2002", phone=("192.0.2.20", 5060))
    page = html(viewer_client.get("/trace/"))
    assert re.findall(r'<tr data-call-id="([^"]*)">', page) == ["other@host", CALL, "older@host"]
    row = page[page.index(f'<tr data-call-id="{CALL}">'):]
    row = row[:row.index("</tr>")]
    assert f'href="/trace/{CALL.replace("@", "%40")}/"' in row
    assert "192.0.2.10:5062" in row and '<td class="message-count">4</td>' in row and "REGISTER sip:regis.test" in row
    assert "200 OK" in row
    filtered = html(viewer_client.get("/trace/?extension=2002"))
    assert re.findall(r'<tr data-call-id="([^"]*)">', filtered) == ["other@host"]
    by_ip = html(viewer_client.get("/trace/?ip=192.0.2.10"))
    assert re.findall(r'<tr data-call-id="([^"]*)">', by_ip) == [CALL, "older@host"]
    assert "SIP carries none" in page


def test_the_trace_partial_has_the_targets_and_the_rows(viewer_client):
    registration()
    fragment = html(viewer_client.get("/trace/?partial=1"))
    assert 'id="trace-targets-box"' in fragment and 'id="trace-dialogs-rows"' in fragment and "<nav" not in fragment


def test_the_ladder_has_one_column_per_party_and_the_arrows_in_time_order(viewer_client):
    registration()
    page = html(viewer_client.get(f"/trace/{CALL}/"))
    columns = re.findall(r'<text class="party-label"[^>]*>([^<]*)</text>', page)
    assert columns == ["192.0.2.10:5062", "Regis"]
    arrows = re.findall(r'<a class="arrow (in|out)" href="#msg-(\d+)"', page)
    messages = list(TracedMessage.objects.order_by("captured_at", "id"))
    assert arrows == [(m.direction, str(m.pk)) for m in messages]
    labels = re.findall(r'<text class="label"[^>]*>([^<]*)</text>', page)
    assert labels == ["REGISTER sip:regis.test", "401 Unauthorized", "REGISTER sip:regis.test", "200 OK"]
    times = re.findall(r'<text class="time"[^>]*>([^<]*)</text>', page)
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3}", value) for value in times)
    # In goes from the phone's column to Regis's (left to right), out comes back.
    lines = re.findall(r'<line x1="([\d.]+)" x2="([\d.]+)"', page)
    assert [float(x1) < float(x2) for x1, x2 in lines] == [True, False, True, False]
    for message in messages:
        assert f'<details id="msg-{message.pk}"' in page
    assert "Authorization: Digest username=&quot;1001&quot;" in page  # the whole message, escaped
    assert 'href="/trace/a84b4c76e66710%40pc33.example.com.pcap"' in page


def test_the_ladder_escapes_what_phones_send(viewer_client):
    evil = '<script>alert("x")</script>'
    call_id = 'x<img src=y onerror=alert(1)>@h'
    store(("in", request(call_id=call_id, user_agent=evil).replace("REGISTER sip:regis.test",
                                                                    f"REGISTER sip:{evil}@regis.test")))
    page = html(viewer_client.get(f"/trace/{call_id.replace('<', '%3C').replace('>', '%3E')}/"))
    assert "<script>alert" not in page and "<img src=y" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "x&lt;img src=y onerror=alert(1)&gt;@h" in page
    listing = html(viewer_client.get("/trace/"))
    assert "<img src=y" not in listing and "<script>alert" not in listing
    assert 'href="/trace/x%3Cimg%20src%3Dy%20onerror%3Dalert%281%29%3E%40h/"' in listing


def test_a_call_id_with_slashes_and_question_marks_has_its_own_pages(viewer_client):
    call_id = "odd/call?id=1#x@host"
    registration(call_id)
    listing = html(viewer_client.get("/trace/"))
    href = re.search(r'<td class="wrap call-id"><a href="([^"]+)"', listing).group(1)
    assert href == "/trace/odd%2Fcall%3Fid%3D1%23x%40host/"
    assert viewer_client.get(href).status_code == 200
    assert len(parse_pcap(body(viewer_client.get(href[:-1] + ".pcap")))) == 4


def test_an_unknown_call_id_is_404(viewer_client):
    assert viewer_client.get("/trace/nothing@here/").status_code == 404
    assert viewer_client.get("/trace/nothing@here.pcap").status_code == 404


def test_a_long_dialog_shows_its_last_messages(viewer_client, monkeypatch):
    monkeypatch.setattr(trace, "LADDER_MESSAGES", 3)
    registration()
    page = html(viewer_client.get(f"/trace/{CALL}/"))
    assert len(re.findall(r'<a class="arrow', page)) == 3 and "The last 3 of 4 messages" in page


# -- downloads --------------------------------------------------------------------------
def test_the_text_download_separates_messages_with_time_and_direction(viewer_client):
    registration(at=datetime(2026, 5, 4, 10, 0, 0, 123000, tzinfo=dt_timezone.utc).timestamp())
    response = viewer_client.get(f"/trace/{CALL}.txt")
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="call-a84b4c76e66710_pc33.example.com.txt"'
    content = body(response).decode()
    headers = re.findall(r"^==== (.*)$", content, re.M)
    assert len(headers) == 4
    assert headers[0].startswith("2026-05-04 10:00:00.123 UTC  received  UDP  192.0.2.10:5062 -> Regis:5060")
    assert headers[1].startswith("2026-05-04 10:00:00.124 UTC  sent  UDP  Regis:5060 -> 192.0.2.10:5062")
    assert headers[0].endswith("extension 1001")
    assert "\nREGISTER sip:regis.test SIP/2.0\nVia: SIP/2.0/UDP" in content and "\r" not in content
    assert "\nSIP/2.0 401 Unauthorized\n" in content


def test_the_pcap_holds_each_message_as_a_udp_datagram(viewer_client):
    at = datetime(2026, 5, 4, 10, 0, 0, 123456, tzinfo=dt_timezone.utc)
    registration(at=at.timestamp())
    response = viewer_client.get(f"/trace/{CALL}.pcap")
    assert response["Content-Type"] == "application/vnd.tcpdump.pcap"
    assert response["Content-Disposition"].endswith('.pcap"')
    packets = parse_pcap(body(response))
    messages = list(TracedMessage.objects.order_by("captured_at", "id"))
    assert [p["payload"] for p in packets] == [m.data.encode() for m in messages]
    first, second = packets[:2]
    assert (first["src"], first["src_port"], first["dst"], first["dst_port"]) == ("192.0.2.10", 5062,
                                                                                 trace.SERVER_IPV4, 5060)
    assert (second["src"], second["src_port"], second["dst"], second["dst_port"]) == (trace.SERVER_IPV4, 5060,
                                                                                     "192.0.2.10", 5062)
    assert first["time"] == pytest.approx(at.timestamp(), abs=1e-6)
    assert [p["time"] for p in packets] == sorted(p["time"] for p in packets)


def test_ipv6_and_tcp_messages_are_written_as_udp_over_ipv6(viewer_client):
    registration(phone=("2001:db8::10", 5070), transport="tcp")
    packets = parse_pcap(body(viewer_client.get(f"/trace/{CALL}.pcap")))
    assert [(p["src"], p["dst"]) for p in packets[:2]] == [("2001:db8::10", trace.SERVER_IPV6),
                                                          (trace.SERVER_IPV6, "2001:db8::10")]
    assert packets[0]["payload"].startswith(b"REGISTER sip:regis.test SIP/2.0\r\nVia: SIP/2.0/UDP [2001:db8::10]")
    text = body(viewer_client.get(f"/trace/{CALL}.txt")).decode()
    assert "received  TCP  [2001:db8::10]:5070 -> Regis:5060" in text


def test_a_message_longer_than_a_datagram_is_cut_and_says_so():
    message = SimpleNamespace(peer_ip="192.0.2.10", peer_port=5060, local_port=0, direction="in",
                              captured_at=datetime(2026, 5, 4, tzinfo=dt_timezone.utc),
                              data="MESSAGE sip:x SIP/2.0\r\n\r\n" + "é" * 40000)
    [packet] = parse_pcap(b"".join(trace.pcap_export([message])))
    assert len(packet["payload"]) == 65535 - 28 and packet["original"] == 28 + len(message.data.encode())


def test_the_whole_trace_downloads_with_filters(viewer_client):
    registration("one@host", at=time.time() - 1)
    registration("two@host", phone=("192.0.2.20", 5060), extension="1002")
    everything = parse_pcap(body(viewer_client.get("/trace.pcap")))
    assert len(everything) == 8
    by_extension = parse_pcap(body(viewer_client.get("/trace.pcap?extension=1002")))
    assert len(by_extension) == 4 and all(b"two@host" in p["payload"] for p in by_extension)
    by_ip = parse_pcap(body(viewer_client.get("/trace.pcap?ip=192.0.2.10")))
    assert len(by_ip) == 4 and all(b"one@host" in p["payload"] for p in by_ip)
    text = body(viewer_client.get("/trace.txt?extension=1001")).decode()
    assert "one@host" in text and "two@host" not in text
    bad = viewer_client.get("/trace.pcap?ip=nonsense")
    assert bad.status_code == 400 and b"ip:" in bad.content


def test_an_empty_trace_is_a_valid_pcap(viewer_client):
    assert parse_pcap(body(viewer_client.get("/trace.pcap"))) == []


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed (apt-get install tshark)")
def test_tshark_reads_the_pcap_as_sip(viewer_client, tmp_path):
    registration(at=time.time() - 1)
    registration("v6@host", phone=("2001:db8::10", 5070))
    path = tmp_path / "trace.pcap"
    path.write_bytes(body(viewer_client.get("/trace.pcap")))
    result = subprocess.run(["tshark", "-r", str(path), "-Y", "sip", "-T", "fields", "-e", "sip.Call-ID",
                             "-e", "sip.Method", "-e", "sip.Status-Code", "-e", "udp.checksum.status",
                             "-o", "udp.check_checksum:TRUE"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in result.stdout.strip().splitlines()]
    assert [row[:3] for row in rows] == [[CALL, "REGISTER", ""], [CALL, "", "401"], [CALL, "REGISTER", ""],
                                         [CALL, "", "200"]] + [
                                        ["v6@host", "REGISTER", ""], ["v6@host", "", "401"],
                                        ["v6@host", "REGISTER", ""], ["v6@host", "", "200"]]
    assert {row[3] for row in rows} == {"1"}  # tshark: checksum good


# -- the API ----------------------------------------------------------------------------
def test_the_api_lists_traced_messages_with_filters(as_viewer):
    registration("one@host", at=time.time() - 1)
    registration("two@host", phone=("192.0.2.20", 5060), extension="1002")
    assert APIClient().get("/api/v1/trace/").status_code == 401
    listed = as_viewer.get("/api/v1/trace/").json()
    assert listed["count"] == 8
    newest = listed["results"][0]
    assert newest["summary"] == "SIP/2.0 200 OK" and newest["call_id"] == "two@host"
    assert newest["direction"] == "out" and newest["extension"] == "1002" and newest["peer_ip"] == "192.0.2.20"
    assert newest["data"].startswith("SIP/2.0 200 OK\r\n")
    assert as_viewer.get("/api/v1/trace/?extension=1001").json()["count"] == 4
    assert as_viewer.get("/api/v1/trace/?ip=192.0.2.20").json()["count"] == 4
    assert as_viewer.get("/api/v1/trace/?call_id=one@host").json()["count"] == 4
    assert as_viewer.get("/api/v1/trace/?ip=bad").status_code == 400
    assert as_viewer.get(f"/api/v1/trace/{newest['id']}/").json() == newest


def test_the_trace_cannot_be_written_through_the_api(as_admin):
    registration()
    assert as_admin.post("/api/v1/trace/", {}).status_code == 405
    assert as_admin.delete(f"/api/v1/trace/{TracedMessage.objects.first().pk}/").status_code == 405


def test_the_api_downloads_the_pcap_with_filters(as_viewer):
    registration("one@host", at=time.time() - 1)
    registration("two@host", phone=("192.0.2.20", 5060), extension="1002")
    response = as_viewer.get("/api/v1/trace/pcap/?call_id=two@host")
    assert response.status_code == 200 and response["Content-Type"] == "application/vnd.tcpdump.pcap"
    packets = parse_pcap(body(response))
    assert len(packets) == 4 and all(p["src"] == "192.0.2.20" or p["dst"] == "192.0.2.20" for p in packets)
    asked = as_viewer.get("/api/v1/trace/pcap/?extension=1001", HTTP_ACCEPT="application/vnd.tcpdump.pcap")
    assert asked.status_code == 200 and len(parse_pcap(body(asked))) == 4
    assert APIClient().get("/api/v1/trace/pcap/").status_code == 401
    assert as_viewer.get("/api/v1/trace/pcap/?ip=bad").status_code == 400
    refused = as_viewer.get("/api/v1/trace/pcap/?ip=bad", HTTP_ACCEPT="application/vnd.tcpdump.pcap")
    assert refused.status_code == 400 and refused["Content-Type"] == "application/json" and "ip" in refused.json()


EXTERNAL = re.compile(r'(?:src|href|action)\s*=\s*["\']?\s*(?:https?:)?//', re.I)


def test_no_trace_page_loads_anything_from_another_host(admin_client):
    registration()
    for url in ("/trace/", f"/trace/{CALL}/", "/bans/", "/extensions/1001/diagnosis/", "/settings/?patterns=x"):
        page = html(admin_client.get(url))
        assert not EXTERNAL.search(page), (url, EXTERNAL.search(page))
    script = b"".join(admin_client.get("/static/webui/ladder.js").streaming_content).decode()
    assert "http" not in script
