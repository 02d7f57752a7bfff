#!/usr/bin/env python3
"""Calls through runsip, the stateful proxy: calls per second and call set-up time.

    ./regis bench-calls [--db sqlite|postgres] [--pairs 100] [--rates 50,100,200] [--calls 2000]

One runsip on loopback, ``--pairs`` caller extensions and as many callee extensions in
the benchmark's own database (SQLite in a temporary folder by default; PostgreSQL when
``--db postgres``, or by default when DATABASE_URL names a PostgreSQL server: on that
server the database ``regis_bench_calls`` is dropped, created and dropped again at the
end). Soft parameters: 104 MD5 (SIPp computes only MD5), 305 rate limit off (all the load
comes from one address), 106 qualify off (the OPTIONS pings would reach the SIPp callee,
which answers only calls).

1. Every callee registers (benchmarks/register.xml, digest) from the UDP port where a
   SIPp UAS (benchmarks/call_uas.xml) then answers all of their calls: runsip reaches a
   phone at the address its REGISTER came from, so the one UAS takes every callee's calls.
2. Per rate of ``--rates``: a SIPp UAC (benchmarks/call_uac.xml) places ``--calls`` calls
   at that rate, caller i calling callee i (an injection file): INVITE → 407, ACK, INVITE
   with credentials → 100/180/200, ACK, ``--hold-ms`` of talk, BYE → 200.
3. After each rate, through the ORM (this script in a Django subprocess): the Call rows of
   that SIPp run (its Call-IDs end with ``-<SIPp pid>@127.0.0.1``), how many were answered
   and how many ended "hung up by the caller" — it waits until runsip's batched progress
   writes stop changing them (at most ``--settle`` seconds).

Call set-up time is SIPp's response time "setup": the INVITE with credentials to its 200 OK
(every value, from ``-trace_rtt``), median and p95. A rate has *no failures* when every
call completed, none failed and the database holds every call answered and hung up by the
caller; it is *sustained* when moreover SIPp achieved at least 90 % of the rate and the
set-up time's p95 stayed within ``--max-setup-ms`` (1 s: beyond, runsip fell behind and a
queue grew for the whole run); *clean* also wants no retransmission.
Results go to ``--out``/calls-<sqlite|postgres>.json. Everything listens on 127.0.0.1 and
every subprocess is bounded (SIPp's -timeout plus a wait deadline).
"""
import argparse
import datetime
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import run as bench  # benchmarks/run.py: database, runsip and SIPp helpers

UAC_SCENARIO = bench.BENCH_DIR / "call_uac.xml"
UAS_SCENARIO = bench.BENCH_DIR / "call_uas.xml"
CALLER_FIRST = 610_000
CALLEE_FIRST = 620_000
DB_NAME = "regis_bench_calls"
DEFAULT_RATES = "25,50,75,100,150,200"


# -- the database side (a Django subprocess: this orchestrator never imports Django) ------
def _django():
    sys.path.insert(0, str(bench.REPO_ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pbx.settings")
    import django

    django.setup()


def helper_settings() -> dict:
    """Soft parameters a loopback benchmark needs beyond dbtool's prepare."""
    _django()
    from registrar import services

    services.set_soft_parameter("qualify_interval", 0, actor="benchmark", via="cli")
    return {"qualify_interval": 0}


def helper_check(sipp_pid: int, expected: int, settle: float) -> dict:
    """The Call rows of one SIPp run, once runsip's batched progress writes have settled."""
    _django()
    from django.db.models import Count

    from registrar.choices import CallState
    from registrar.models import Call

    calls = Call.objects.filter(call_id__endswith=f"-{sipp_pid}@{bench.LOOPBACK}")
    started = time.monotonic()
    last, stable_since = None, time.monotonic()
    while True:
        counts = {
            "rows": calls.count(),
            "answered": calls.filter(answered_at__isnull=False).count(),
            "ended": calls.filter(state=CallState.ENDED).count(),
            "hung_up_by_caller": calls.filter(state=CallState.ENDED, reason="hung up by the caller").count(),
        }
        if counts != last:
            last, stable_since = counts, time.monotonic()
        done = counts["hung_up_by_caller"] >= expected and counts["answered"] >= expected
        if done or time.monotonic() - stable_since > 3.0 or time.monotonic() - started > settle:
            break
        time.sleep(0.25)
    counts["waited_s"] = round(time.monotonic() - started, 2)
    counts["by_state"] = dict(calls.values_list("state").annotate(n=Count("id")).order_by())
    counts["other_reasons"] = dict(calls.exclude(reason="hung up by the caller").values_list("reason")
                                   .annotate(n=Count("id")).order_by("-n")[:5])
    return counts


def helper_main(argv) -> int:
    parser = argparse.ArgumentParser(prog="calls.py --helper")
    parser.add_argument("action", choices=("settings", "check"))
    parser.add_argument("--pid", type=int)
    parser.add_argument("--expected", type=int, default=0)
    parser.add_argument("--settle", type=float, default=30.0)
    args = parser.parse_args(argv)
    result = helper_settings() if args.action == "settings" else helper_check(args.pid, args.expected, args.settle)
    print(json.dumps(result))
    return 0


def helper(env: dict, *args, timeout: float = 120) -> dict:
    completed = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--helper", *map(str, args)],
                               cwd=bench.REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if completed.returncode:
        raise RuntimeError(f"calls.py --helper {' '.join(map(str, args))} failed:\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


# -- SIPp --------------------------------------------------------------------------------
def write_calls_csv(path: Path, pairs: int) -> Path:
    """field0 the caller, field1 its [authentication], field2 the callee: caller i calls callee i."""
    with open(path, "w") as out:
        out.write("SEQUENTIAL\n")
        for i in range(pairs):
            caller = CALLER_FIRST + i
            out.write(f"{caller};[authentication username={caller} password={bench.PASSWORD}];{CALLEE_FIRST + i};\n")
    return path


class SippProcess:
    """One SIPp in the background, in its own folder; :meth:`wait` gives its statistics."""

    def __init__(self, args: list, workdir: Path, timeout: float):
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir, self.timeout = workdir, timeout
        self.command = [shutil.which("sipp"), *map(str, args), "-i", bench.LOOPBACK, "-nostdin",
                        "-timeout", f"{int(timeout)}s", "-cp", str(bench.free_udp_port()),
                        "-buff_size", str(4 * 1024 * 1024), "-trace_stat", "-stf", "stats.csv", "-fd", "1",
                        "-trace_err", "-error_file", "errors.log", "-max_log_size", str(2 * 1024 * 1024)]
        self._out = open(workdir / "stdout.txt", "w")
        self.started = time.perf_counter()
        self.process = subprocess.Popen(self.command, cwd=workdir, stdin=subprocess.DEVNULL, stdout=self._out,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.process.pid

    def wait(self, timeout: float | None = None) -> dict:
        """Until SIPp exits, at most ``timeout`` (default its -timeout + 20 s), then killed."""
        deadline = time.monotonic() + (self.timeout + 20 if timeout is None else timeout)
        while True:
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            if pid:
                returncode = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                os.killpg(self.pid, signal.SIGKILL)
                _, status, usage = os.wait4(self.pid, 0)
                returncode = -999
                break
            time.sleep(0.02)
        self.process.returncode = returncode
        wall = time.perf_counter() - self.started
        self._out.close()
        rows = bench._rows(self.workdir / "stats.csv")
        stats = rows[-1] if rows else {}
        return {"returncode": returncode, "wall_s": round(wall, 2), "stats": stats,
                "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
                "errors": event_summary(self.workdir / "errors.log")}


def event_summary(path: Path, limit: int = 5) -> list:
    """The most frequent kinds of SIPp's error events (its timestamped lines, numbers blanked,
    the message it quotes left out), most frequent first."""
    if not path.exists():
        return []
    import re
    from collections import Counter

    kinds = Counter()
    # SIPp runs its events together, on one line or several: split at each timestamp.
    events = re.split(r"\d{4}-\d\d-\d\d\t[\d:.]+\t[\d.]+: ", path.read_text(errors="replace"))
    for event in events[1:]:
        text = event.split("'")[0].split(", received")[0].strip()
        kinds[re.sub(r"\d+", "N", text)[:200]] += 1
    return [f"{count} x {kind}" for kind, count in kinds.most_common(limit)]


def register_callees(runsip, workdir: Path, pairs: int, uas_port: int) -> dict:
    """Each callee registers from ``uas_port``: its binding's source, where runsip sends its calls."""
    csv = bench.write_users_csv(workdir / "callees.csv", CALLEE_FIRST, pairs)
    sipp = bench.Sipp(runsip.port, workdir / "register", csv, rate=min(200, pairs), calls=pairs, timeout=60,
                      local_port=uas_port)
    result = sipp.wait()
    if result["completed"] != pairs:
        raise RuntimeError(f"registering the callees: {result['completed']}/{pairs} registered, "
                           f"{result['sipp_errors']}\n{runsip.tail()}")
    return result


def rtt_values(workdir: Path, name: str) -> list:
    """Every response time ``name`` (ms) from SIPp's -trace_rtt file (Date_ms;response_time_ms;rtd_no)."""
    values = []
    for path in workdir.glob("*_rtt.csv"):
        with open(path, errors="replace") as source:
            for line in source:
                fields = line.strip().split(";")
                if len(fields) >= 3 and fields[2] == name:
                    try:
                        values.append(float(fields[1]))
                    except ValueError:
                        pass
    return values


def _percentile(values: list, fraction: float):
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 2)


def runsip_errors(runsip) -> int:
    return runsip.log_path.read_text(errors="replace").count(" ERROR ")


def one_rate(ctx, rate: float, calls: int) -> dict:
    """The UAS, then the UAC at ``rate`` for ``calls`` calls; SIPp's numbers, CPU and the database's."""
    workdir = ctx.workdir / f"rate-{rate:g}"
    duration = calls / rate
    timeout = duration + 30
    uas = SippProcess(["-sf", UAS_SCENARIO, "-t", "u1", "-p", ctx.uas_port, "-m", calls, "-recv_timeout", "10s"],
                      workdir / "uas", timeout + 15)
    time.sleep(0.5)  # the UAS binds its port before the first INVITE
    meter = ctx.db.meter()
    if meter is not None:
        meter.start()
    server0, busy0, own0 = ctx.runsip.cpu(), bench.machine_busy_cpu(), bench.own_cpu()
    drops0 = bench.udp_socket_drops(ctx.runsip.port) or 0
    errors0 = runsip_errors(ctx.runsip)
    started = time.perf_counter()
    uac = SippProcess([f"{bench.LOOPBACK}:{ctx.runsip.port}", "-sf", UAC_SCENARIO, "-t", "u1",
                       "-p", bench.free_udp_port(), "-m", calls, "-r", rate, "-rp", "1000",
                       "-l", max(1000, int(rate * 5)), "-d", ctx.hold_ms, "-recv_timeout", "10s",
                       "-auth_uri", bench.DOMAIN, "-inf", ctx.calls_csv, "-key", "domain", bench.DOMAIN,
                       "-trace_rtt", "-rtt_freq", "1"], workdir / "uac", timeout)
    caller = uac.wait()
    uas_result = uas.wait(timeout=10)  # it has taken every call it will get by now
    wall = time.perf_counter() - started
    server = ctx.runsip.cpu() - server0
    busy, own = bench.machine_busy_cpu() - busy0, bench.own_cpu() - own0
    db_split = meter.stop() if meter is not None else None
    drops = (bench.udp_socket_drops(ctx.runsip.port) or 0) - drops0
    errors = runsip_errors(ctx.runsip) - errors0

    stats = caller["stats"]
    completed = bench._int(stats.get("SuccessfulCall(C)")) or 0
    failed = bench._int(stats.get("FailedCall(C)")) or 0
    setup = rtt_values(workdir / "uac", "setup")
    whole = rtt_values(workdir / "uac", "call")
    mean_call_s = (statistics.mean(whole) / 1000) if whole else ctx.hold_ms / 1000
    # Calls were being started for the wall time less one call's length (the last one's).
    placing = max(0.001, caller["wall_s"] - mean_call_s)
    records = ctx.check(uac.pid, completed)
    db_cpu = (db_split["ours"] + db_split["background"]) if db_split else 0.0
    sipp_cpu = caller["cpu_s"] + uas_result["cpu_s"]
    result = {
        "rate": rate,
        "attempted": bench._int(stats.get("OutgoingCall(C)")) or 0,
        "calls": calls,
        "completed": completed,
        "failed": failed,
        "unfinished": max(0, calls - completed - failed),
        "retransmissions": bench._int(stats.get("Retransmissions(C)")) or 0,
        "callee_retransmissions": bench._int(uas_result["stats"].get("Retransmissions(C)")) or 0,
        "callee_completed": bench._int(uas_result["stats"].get("SuccessfulCall(C)")) or 0,
        "callee_failed": bench._int(uas_result["stats"].get("FailedCall(C)")) or 0,
        "achieved_per_s": round(completed / placing, 1),
        "wall_s": caller["wall_s"],
        "setup_ms": {"samples": len(setup), "p50": _percentile(setup, 0.50), "p95": _percentile(setup, 0.95),
                     "p99": _percentile(setup, 0.99), "max": max(setup) if setup else None},
        "call_ms": {"samples": len(whole), "p50": _percentile(whole, 0.50), "p95": _percentile(whole, 0.95)},
        "server_drops": drops,
        "runsip_error_lines": errors,  # ERROR lines runsip logged meanwhile (runsip.log in the work folder)
        "runsip_cpu_pct": round(100 * server / wall, 1),
        "db_cpu_pct": round(100 * db_cpu / wall, 1) if db_split else None,
        "sipp_cpu_pct": round(100 * sipp_cpu / wall, 1),
        "other_cpu_pct": round(100 * max(0.0, busy - server - db_cpu - sipp_cpu - own) / wall, 1),
        "database": records,
        "sipp_returncodes": {"uac": caller["returncode"], "uas": uas_result["returncode"]},
        "sipp_errors": {"uac": caller["errors"], "uas": uas_result["errors"]},
        "runsip_alive": ctx.runsip.alive(),
    }
    result["records_match"] = (records["answered"] == completed and records["hung_up_by_caller"] == completed
                               and records["rows"] == result["attempted"])
    # No failure: every call completed and is recorded answered and hung up by the caller.
    result["no_failures"] = (completed == calls and failed == 0 and result["records_match"]
                             and result["runsip_alive"])
    # Sustained: also kept up with the rate, without a queue growing for the whole run.
    result["passed"] = (result["no_failures"] and result["achieved_per_s"] >= 0.9 * rate
                        and (result["setup_ms"]["p95"] or 0) <= ctx.max_setup_ms)
    result["clean"] = result["passed"] and result["retransmissions"] == 0 and result["callee_retransmissions"] == 0
    return result


HEADER = (f"{'rate/s':>6} {'tried':>6} {'done':>6} {'failed':>6} {'retr':>5} {'calls/s':>7} {'setup p50':>9} "
          f"{'p95 ms':>7} {'rows':>6} {'answered':>8} {'by caller':>9} {'runsip':>6} {'db':>5} {'other':>5}  result")


def row_text(row: dict) -> str:
    def pct(value):
        return "-" if value is None else f"{value:.0f}%"

    def ms(value):
        return "-" if value is None else f"{value:.1f}"

    db = row["database"]
    verdict = ("clean" if row["clean"] else "sustained" if row["passed"]
               else "no failure, behind" if row["no_failures"] else "FAIL")
    return (f"{row['rate']:>6g} {row['attempted']:>6} {row['completed']:>6} {row['failed']:>6} "
            f"{row['retransmissions'] + row['callee_retransmissions']:>5} {row['achieved_per_s']:>7.1f} "
            f"{ms(row['setup_ms']['p50']):>9} {ms(row['setup_ms']['p95']):>7} {db['rows']:>6} "
            f"{db['answered']:>8} {db['hung_up_by_caller']:>9} {pct(row['runsip_cpu_pct']):>6} "
            f"{pct(row['db_cpu_pct']):>5} {pct(row['other_cpu_pct']):>5}  {verdict}")


class Context:
    pass


def pg_server_url(url: str) -> str:
    """``url``'s server with the benchmark's own database name: never the one named there."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + DB_NAME, parts.query, ""))


def parse_args(argv=None):
    env_url = os.environ.get("DATABASE_URL", "")
    parser = argparse.ArgumentParser(prog="./regis bench-calls", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=("sqlite", "postgres"),
                        default="postgres" if env_url.startswith("postgres") else "sqlite",
                        help="default: postgres when DATABASE_URL names a PostgreSQL server, else sqlite")
    parser.add_argument("--pg-url", default=os.environ.get("BENCH_DATABASE_URL") or env_url or bench.DEFAULT_PG_URL,
                        help=f"PostgreSQL server (its database name is replaced by {DB_NAME}, created and dropped)")
    parser.add_argument("--pairs", type=int, default=100, help="caller and callee extensions, each (default 100)")
    parser.add_argument("--rates", default=DEFAULT_RATES, help=f"calls/s, comma-separated (default {DEFAULT_RATES})")
    parser.add_argument("--calls", type=int, default=2000, help="calls per rate (SIPp -m, default 2000)")
    parser.add_argument("--hold-ms", type=int, default=200, help="talk time between ACK and BYE (default 200)")
    parser.add_argument("--settle", type=float, default=30.0,
                        help="seconds at most to wait for the call records to settle after a rate (default 30)")
    parser.add_argument("--max-setup-ms", type=float, default=1000.0,
                        help="a sustained rate keeps the set-up time's p95 within this (default 1000)")
    parser.add_argument("--full-ramp", action="store_true", help="run every rate even after two failed ones")
    parser.add_argument("--out", type=Path, default=bench.BENCH_DIR / "results")
    parser.add_argument("--keep-db", action="store_true", help="keep the database and the work folder")
    args = parser.parse_args(argv)
    args.rate_list = [float(rate) for rate in args.rates.split(",") if rate.strip()]
    if args.db == "postgres":
        args.pg_url = pg_server_url(args.pg_url)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if shutil.which("sipp") is None:
        bench.log("sipp is not installed: apt-get install sip-tester (./regis bench-calls installs it)")
        return 2
    workdir = Path(tempfile.mkdtemp(prefix=f"regis-calls-bench-{args.db}-", dir="/tmp"))
    (workdir / "data").mkdir()
    db = bench.Database(args.db, workdir, args.pg_url)
    env = bench.django_env(db, workdir / "data")
    machine = bench.machine_info(args.pg_url if args.db == "postgres" else None)
    report = {
        "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["benchmarks/calls.py", *(argv if argv is not None else sys.argv[1:])]),
        "db": args.db, "pairs": args.pairs, "calls_per_rate": args.calls, "hold_ms": args.hold_ms,
        "machine": machine, "rates": [],
    }
    bench.log(f"calls benchmark on {args.db}: {args.pairs} callers -> {args.pairs} callees, {args.calls} calls "
              f"per rate, {args.hold_ms} ms talk; {machine['nproc']} x {machine['cpu_model']}")
    runsip = None
    exit_code = 0
    try:
        db.create()
        bench.migrate(env)
        bench.dbtool(env, "prepare", "--password", bench.PASSWORD, "--range", f"{CALLER_FIRST}+{args.pairs}",
                     "--range", f"{CALLEE_FIRST}+{args.pairs}")
        helper(env, "settings")
        ctx = Context()
        ctx.workdir, ctx.db, ctx.hold_ms, ctx.max_setup_ms = workdir, db, args.hold_ms, args.max_setup_ms
        ctx.calls_csv = write_calls_csv(workdir / "calls.csv", args.pairs)
        ctx.uas_port = bench.free_udp_port()
        ctx.check = lambda pid, expected: helper(env, "check", "--pid", pid, "--expected", expected,
                                                 "--settle", args.settle, timeout=args.settle + 60)
        runsip = ctx.runsip = bench.RunSip(env, bench.free_udp_port(), 1, workdir / "runsip.log")
        runsip.start()
        registered = register_callees(runsip, workdir, args.pairs, ctx.uas_port)
        bench.log(f"{registered['completed']} callees registered from 127.0.0.1:{ctx.uas_port} (the SIPp UAS)")
        bench.log(HEADER)
        failures_in_a_row = 0
        for rate in args.rate_list:
            time.sleep(bench.PAUSE)
            row = one_rate(ctx, rate, args.calls)
            report["rates"].append(row)
            bench.log(row_text(row))
            if not row["no_failures"]:
                for side, errors in row["sipp_errors"].items():
                    for line in errors[:3]:
                        bench.log(f"    {side}: {line}")
            failures_in_a_row = 0 if row["passed"] else failures_in_a_row + 1
            if not row["runsip_alive"]:
                bench.log(f"runsip died:\n{runsip.tail()}")
                exit_code = 1
                break
            if failures_in_a_row >= 2 and not args.full_ramp:
                break
        for key, verdict in (("highest_rate_without_failures", "no_failures"),
                             ("highest_sustained_rate", "passed"), ("highest_clean_rate", "clean")):
            rates = [row["rate"] for row in report["rates"] if row[verdict]]
            report[key] = max(rates) if rates else None
        bench.log(f"highest rate without failures: {report['highest_rate_without_failures']} calls/s; "
                  f"sustained (>= 90 % of the rate, set-up p95 <= {args.max_setup_ms} ms): "
                  f"{report['highest_sustained_rate']}; clean (also no retransmission): "
                  f"{report['highest_clean_rate']}")
    except Exception as error:  # noqa: BLE001 - the JSON still says what happened
        exit_code = 1
        report["error"] = str(error)[-3000:]
        bench.log(f"the calls benchmark failed: {error}")
    finally:
        if runsip is not None:
            runsip.stop()
        if not args.keep_db:
            db.drop()
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            bench.log(f"kept: {workdir}" + (f" and database {DB_NAME}" if args.db == "postgres" else ""))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"calls-{args.db}.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    bench.log(f"results in {path}")
    return exit_code


if __name__ == "__main__":
    if sys.argv[1:2] == ["--helper"]:
        sys.exit(helper_main(sys.argv[2:]))
    sys.exit(main())
