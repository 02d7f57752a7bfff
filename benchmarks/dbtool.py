"""The benchmark's database side: fixtures, the 100k-binding steps and page timings.

``benchmarks/run.py`` runs this as a subprocess with ``DATABASE_URL`` (and the SIP
realm) set for the database under test, one action per call; each action prints one
JSON object on its last line of stdout. Kept apart from run.py so that the
orchestrator never imports Django and can drive several databases in one run.

Fixture data is bulk-loaded (benchmarks may): extensions through
``Extension.objects.bulk_create`` with HA1s from ``registrar.sip.digest.compute_ha1``
(the same hashes ``services.create_extension`` stores), bindings through
``services.store_registrations`` in batches, the write path the SIP worker uses.
"""
import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pbx.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

from registrar import services  # noqa: E402
from registrar.models import Binding, Extension  # noqa: E402
from registrar.sip.digest import compute_ha1  # noqa: E402

BULK_BATCH = 2000


def bulk_extensions(first: int, count: int, password: str) -> int:
    """Create extensions ``first`` .. ``first + count - 1`` (numbers), all with ``password``."""
    realm = settings.SIP_REALM
    made = 0
    for start in range(first, first + count, BULK_BATCH):
        rows = []
        for number in range(start, min(start + BULK_BATCH, first + count)):
            user = str(number)
            rows.append(Extension(
                number=user, display_name=f"bench {user}", realm=realm,
                ha1_md5=compute_ha1(user, realm, password, "MD5"),
                ha1_sha256=compute_ha1(user, realm, password, "SHA-256"),
                ha1_sha512_256=compute_ha1(user, realm, password, "SHA-512-256"),
            ))
        with transaction.atomic():
            Extension.objects.bulk_create(rows, batch_size=BULK_BATCH)
        made += len(rows)
    return made


def action_prepare(args) -> dict:
    """Soft parameters for a benchmark from loopback, then the SIPp users and the probe users."""
    started = time.perf_counter()
    services.ensure_soft_parameters()
    services.set_soft_parameter("digest_algorithms", ["MD5"], actor="benchmark", via="cli")
    services.set_soft_parameter("rate_limit", 0, actor="benchmark", via="cli")
    made = 0
    for first, count in args.ranges:
        made += bulk_extensions(first, count, args.password)
    return {"extensions": made, "seconds": round(time.perf_counter() - started, 3)}


def action_extensions(args) -> dict:
    started = time.perf_counter()
    made = 0
    for first, count in args.ranges:
        made += bulk_extensions(first, count, args.password)
    return {"extensions": made, "seconds": round(time.perf_counter() - started, 3)}


def action_bindings(args) -> dict:
    """One binding per extension ``first`` .. ``first + count - 1`` through the group-commit
    service, ``batch`` REGISTERs per transaction, as the SIP worker would write them."""
    from registrar.sip.core import Origin, StoreRegistration
    from registrar.sip.policy import Policy
    from registrar.sip.registrar import ContactRequest, RegisterRequest

    policy = services.current_policy()
    started = time.perf_counter()
    stored = 0
    ticket = 0
    for start in range(args.first, args.first + args.count, args.batch):
        batch = []
        for number in range(start, min(start + args.batch, args.first + args.count)):
            user = str(number)
            ticket += 1
            port = 20000 + number % 40000
            ip = f"10.{number >> 16 & 255}.{number >> 8 & 255}.{number & 255}"
            contact = ContactRequest(f"sip:{user}@{ip}:{port};transport=udp", "", None, "", None, 3600)
            register = RegisterRequest(user, f"bench-{user}", 1, False, (contact,))
            origin = Origin(ip, port, "udp", "Regis-bench/1", "")
            batch.append(StoreRegistration(ticket, register, origin, 5, policy or Policy()))
        outcomes = services.store_registrations(batch, time.time())
        stored += sum(1 for outcome in outcomes if outcome.ok)
    return {"bindings": stored, "seconds": round(time.perf_counter() - started, 3),
            "total_bindings": Binding.objects.count()}


def action_expire(args) -> dict:
    """Every binding's expiry moved an hour into the past (what an outage leaves behind)."""
    started = time.perf_counter()
    with transaction.atomic():
        changed = Binding.objects.update(expires_at=timezone.now() - timezone.timedelta(hours=1))
    return {"expired": changed, "seconds": round(time.perf_counter() - started, 3)}


def action_purge(args) -> dict:
    """With --wait, Django is set up first and the purge starts on a line on stdin, so
    that the caller can start it at a chosen moment without paying for the start-up."""
    if args.wait:
        connection.ensure_connection()
        print("ready", flush=True)
        sys.stdin.readline()
    started = time.perf_counter()
    deleted = services.purge_expired_bindings()
    return {"deleted": deleted, "seconds": round(time.perf_counter() - started, 3),
            "remaining": Binding.objects.count()}


def action_vacuum(args) -> dict:
    """What autovacuum would have done by now after a bulk load: the fixture is loaded in
    seconds, and a server may run with autovacuum off. PostgreSQL: VACUUM ANALYZE of the
    registrar's tables; SQLite: ANALYZE."""
    started = time.perf_counter()
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            for table in (Extension._meta.db_table, Binding._meta.db_table):
                cursor.execute(f"VACUUM ANALYZE {connection.ops.quote_name(table)}")
        else:
            cursor.execute("ANALYZE")
    return {"seconds": round(time.perf_counter() - started, 3)}


def action_counts(args) -> dict:
    return {"extensions": Extension.objects.count(), "bindings": Binding.objects.count(),
            "live_bindings": services.live_bindings().count()}


def _percentile(values, fraction):
    """Nearest rank, as benchmarks/probe.percentile."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = math.ceil(round(fraction * len(ordered), 9))
    return ordered[min(len(ordered), max(1, rank)) - 1]


def action_pages(args) -> dict:
    """p50/p95 of each URL over ``requests`` requests with Django's test Client, in
    process, logged in as a superuser (no server: the numbers are the view's own time,
    database queries included, without HTTP parsing and networking)."""
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    user_model = get_user_model()
    admin = user_model.objects.filter(username="bench-admin").first()
    if admin is None:
        admin = user_model.objects.create_superuser("bench-admin", "bench@example.invalid", "bench-admin-pw")
    client = Client()
    client.force_login(admin)
    results = {}
    for url in args.urls:
        entry = {"url": url}
        started_url = time.perf_counter()
        try:
            first = client.get(url)
            first_s = time.perf_counter() - started_url
        except Exception as error:  # a page being written may not work yet: report and go on
            results[url] = {**entry, "available": False, "error": f"{type(error).__name__}: {error}"[:300]}
            continue
        if first.status_code == 404:
            results[url] = {**entry, "available": False, "status": 404}
            continue
        # The first request warms up (templates, URL resolver) and is not counted,
        # unless the page is so slow that the budget allows only a few: then every
        # request counts, and fewer than asked are reported rather than holding the
        # run for minutes (a page that renders every binding).
        timings, statuses = [], {first.status_code}
        if first_s > args.budget / 4:
            timings.append(first_s)
        budget = started_url + args.budget
        while len(timings) < args.requests and (time.perf_counter() < budget or not timings):
            started = time.perf_counter()
            response = client.get(url)
            timings.append(time.perf_counter() - started)
            statuses.add(response.status_code)
        queries = None
        if first_s < args.budget / 4:
            with CaptureQueriesContext(connection) as captured:
                client.get(url)
            queries = len(captured)
        results[url] = {
            **entry, "available": first.status_code == 200, "status": sorted(statuses),
            "requests": len(timings), "asked": args.requests, "bytes": len(first.content), "queries": queries,
            "p50_ms": round(statistics.median(timings) * 1000, 1),
            "p95_ms": round(_percentile(timings, 0.95) * 1000, 1),
            "max_ms": round(max(timings) * 1000, 1),
        }
    return {"pages": results}


ACTIONS = {"prepare": action_prepare, "extensions": action_extensions, "bindings": action_bindings,
           "expire": action_expire, "purge": action_purge, "counts": action_counts, "vacuum": action_vacuum,
           "pages": action_pages}


def _range(text):
    first, _, count = text.partition("+")
    return int(first), int(count)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=sorted(ACTIONS))
    parser.add_argument("--range", dest="ranges", action="append", type=_range, default=[],
                        metavar="FIRST+COUNT", help="extension numbers FIRST .. FIRST+COUNT-1")
    parser.add_argument("--password", default="bench-secret")
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--url", dest="urls", action="append", default=[])
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--budget", type=float, default=20.0, help="seconds at most per URL")
    parser.add_argument("--wait", action="store_true", help="purge: start on a line on stdin")
    args = parser.parse_args(argv)
    result = ACTIONS[args.action](args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
