#!/usr/bin/env python3
"""Regis benchmark: a real ``manage.py runsip`` on loopback, driven by SIPp.

``./regis bench`` runs this (``benchmarks/README.md`` explains every number). Per
database (PostgreSQL in a dedicated database ``regis_bench``, and the embedded SQLite
default in a temporary file) it:

1. creates and migrates the database, sets soft parameters 104 (MD5: SIPp does only
   MD5) and 305 (rate limit off: all load comes from one loopback address), and
   bulk-loads the users;
2. starts runsip and ramps SIPp through rates of whole registration flows
   (REGISTER → 401 → REGISTER → 200), with a latency probe beside the load;
3. restarts runsip and lets every user register at once (the avalanche);
4. with 100,000 more extensions and then 100,000 bindings: runsip's memory, the
   registrations page, API list and dashboard counts, and a mass expiry (purge of
   every binding) while SIPp keeps registering.

Everything is bounded (SIPp's own -timeout plus a subprocess timeout, runsip's ready
wait, every helper call) and stays on 127.0.0.1. The results go to ``--out``
(default ``benchmarks/results/``) as results.json, results.md and latency.png, fixed
names so that a re-run overwrites them.

This process never imports Django: database work runs in ``benchmarks/dbtool.py``
subprocesses with the database's DATABASE_URL, as runsip does.
"""
import argparse
import csv
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))

from probe import Probe, percentile  # noqa: E402

LOOPBACK = "127.0.0.1"
DOMAIN = "regis.bench"
PASSWORD = "bench-secret"
SECRET_KEY = "regis-benchmark-key-not-a-secret-0123456789abcdef"
SCENARIO = BENCH_DIR / "register.xml"
DEFAULT_PG_URL = "postgres://postgres@127.0.0.1:5432/regis_bench"
DEFAULT_RATES = (500, 1000, 1500, 2000, 3000, 4000, 6000)

# Extension number ranges: SIPp's users, the probe's users, the 100k set.
SIPP_FIRST = 200_000
PROBE_FIRST = 900_000
PROBE_USERS = 100
BIG_FIRST = 300_000
BIG_COUNT = 100_000

READY_TIMEOUT = 120.0   # runsip loads every credential before it says ready
STOP_TIMEOUT = 15.0
PAUSE = 2.0             # between steps: let retransmissions and batches drain
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_URLS = ("/registrations/", "/api/v1/registrations/?transport=udp&page=2", "/api/v1/summary/")


def log(text: str = "") -> None:
    print(text, flush=True)


# -- /proc ------------------------------------------------------------------------------
def _stat(pid: int):
    """(comm, ppid, utime+stime, cutime+cstime) in seconds, or None when gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = data[data.index("(") + 1:data.rindex(")")]
    fields = data[data.rindex(")") + 2:].split()
    # fields[0] is state (field 3 of proc(5)); utime is field 14, so fields[11].
    ppid = int(fields[1])
    own = (int(fields[11]) + int(fields[12])) / CLK_TCK
    children = (int(fields[13]) + int(fields[14])) / CLK_TCK
    return comm, ppid, own, children


def _all_stats() -> dict:
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None:
                stats[int(entry)] = stat
    return stats


def process_tree(root: int) -> list:
    """``root`` and its living descendants."""
    stats = _all_stats()
    children = {}
    for pid, (_, ppid, _, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            tree.append(pid)
            todo.extend(children.get(pid, ()))
    return tree


def tree_cpu(root: int) -> float:
    """CPU seconds (user + system) of ``root``'s living process tree."""
    return sum(stat[2] for stat in (_stat(pid) for pid in process_tree(root)) if stat)


def memory_kib(pid: int) -> dict:
    """VmRSS and VmHWM (peak) of one process, in KiB."""
    values = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    except OSError:
        pass
    return values


class PostgresMeter:
    """CPU of the local PostgreSQL server's processes over one interval, split by whom
    they serve: this benchmark's database (its backends, any autovacuum worker on it),
    the server's background processes (checkpointer, WAL writer, ...) and other
    databases (other work sharing the server).

    A thread samples /proc every ``period`` seconds, so that backends that exit during
    the interval (a helper process's connection) still count, to within one period; a
    process first seen after the start counts from zero.
    """

    BACKGROUND = ("checkpointer", "background writer", "walwriter", "autovacuum launcher",
                  "logical replication launcher", "stats collector", "archiver", "startup")

    def __init__(self, dbname: str, period: float = 0.5):
        self.dbname = dbname
        self.period = period
        self._thread = None

    def _kind(self, pid: int) -> str:
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return "gone"
        if not title.startswith("postgres:"):
            return "background"  # the postmaster
        if any(name in title for name in self.BACKGROUND):
            return "background"
        words = title.split()
        return "ours" if self.dbname in words else "other_databases"

    def _sample(self, initial: bool = False) -> None:
        for pid, (comm, _, own, _) in _all_stats().items():
            if comm != "postgres":
                continue
            if pid not in self._first:
                self._first[pid] = own if initial else 0.0
                self._kinds[pid] = self._kind(pid)
            self._last[pid] = own

    def start(self) -> "PostgresMeter":
        self._first, self._last, self._kinds = {}, {}, {}
        self._halt = threading.Event()
        self._sample(initial=True)
        self._thread = threading.Thread(target=self._run, daemon=True, name="postgres-meter")
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._halt.wait(self.period):
            self._sample()

    def stop(self) -> dict:
        """CPU seconds per kind since :meth:`start`."""
        self._halt.set()
        self._thread.join(timeout=5)
        self._sample()
        split = {"ours": 0.0, "background": 0.0, "other_databases": 0.0}
        for pid, last in self._last.items():
            kind = self._kinds[pid]
            split[kind if kind in split else "other_databases"] += max(0.0, last - self._first[pid])
        return split


def machine_busy_cpu() -> float:
    """CPU seconds the whole machine spent busy (all cores; /proc/stat less idle and iowait)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    # guest time is already counted in user time
    return (sum(fields[:8]) - idle) / CLK_TCK


def udp_receive_errors() -> int:
    """Datagrams the kernel dropped for want of receive buffer room, machine-wide."""
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines() if line.startswith("Udp:")]
    header, values = lines[0], lines[1]
    return int(values[header.index("RcvbufErrors")])


def udp_socket_drops(port: int) -> int | None:
    """The drops counter of the UDP socket(s) bound to 127.0.0.1:``port`` (/proc/net/udp)."""
    wanted = f"0100007F:{port:04X}"
    total, found = 0, False
    try:
        for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1] == wanted:
                total += int(fields[-1])
                found = True
    except OSError:
        return None
    return total if found else None


def own_cpu() -> float:
    times = os.times()
    return times.user + times.system


# -- machine -----------------------------------------------------------------------------
def machine_info(pg_url: str | None) -> dict:
    info = {
        "nproc": os.cpu_count(),
        "cpu_model": "",
        "ram_mib": None,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": None,
        "sipp": None,
        "git_commit": None,
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["ram_mib"] = int(line.split()[1]) // 1024
    except OSError:
        pass
    sipp = shutil.which("sipp")
    if sipp:
        try:
            out = subprocess.run([sipp, "-v"], capture_output=True, text=True, timeout=10).stdout
            info["sipp"] = next((line.strip() for line in out.splitlines() if "SIPp" in line), out.strip())
        except (OSError, subprocess.TimeoutExpired):
            pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        info["git_commit"] = commit + ("-dirty" if dirty else "") if commit else None
    except (OSError, subprocess.TimeoutExpired):
        pass
    if pg_url:
        try:
            import psycopg

            with psycopg.connect(_admin_url(pg_url), connect_timeout=5) as conn:
                info["postgresql"] = conn.execute("SHOW server_version").fetchone()[0]
                info["postgresql_settings"] = {
                    name: conn.execute(f"SHOW {name}").fetchone()[0]
                    for name in ("shared_buffers", "synchronous_commit", "fsync", "autovacuum", "max_connections")}
        except Exception as error:  # noqa: BLE001 - machine info is best effort
            info["postgresql"] = f"unavailable: {error}"[:120]
    try:
        import uvloop  # noqa: F401

        info["event_loop"] = "uvloop " + uvloop.__version__
    except ImportError:
        info["event_loop"] = "asyncio"
    return info


# -- databases ---------------------------------------------------------------------------
def _admin_url(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme.replace("postgresql", "postgres").replace("postgres", "postgresql"),
                       parts.netloc, "/postgres", parts.query, ""))


class Database:
    def __init__(self, kind: str, workdir: Path, pg_url: str = DEFAULT_PG_URL):
        self.kind = kind
        if kind == "postgres":
            self.url = pg_url
            self.name = urlsplit(pg_url).path.lstrip("/")
            host = urlsplit(pg_url).hostname or ""
            self.local = host in ("127.0.0.1", "localhost", "::1", "")
        else:
            self.url = f"sqlite:///{workdir / 'regis_bench.sqlite3'}"
            self.path = workdir / "regis_bench.sqlite3"
            self.local = True

    def create(self) -> None:
        if self.kind == "postgres":
            import psycopg
            from psycopg import sql

            with psycopg.connect(_admin_url(self.url), autocommit=True, connect_timeout=10) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name)))
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name)))
        else:
            for suffix in ("", "-wal", "-shm"):
                Path(str(self.path) + suffix).unlink(missing_ok=True)

    def drop(self) -> None:
        if self.kind == "postgres":
            import psycopg
            from psycopg import sql

            with psycopg.connect(_admin_url(self.url), autocommit=True, connect_timeout=10) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name)))

    def meter(self) -> PostgresMeter | None:
        """A CPU meter of the database server; None for SQLite (inside runsip) or a remote server."""
        if self.kind == "postgres" and self.local:
            return PostgresMeter(self.name)
        return None


# -- subprocess environment ---------------------------------------------------------------
def django_env(db: Database, data_dir: Path) -> dict:
    env = dict(os.environ)
    for name in ("TEST_DATABASE_NAME", "REDIS_URL", "LIVE_RELAY_SOCKET"):
        env.pop(name, None)
    env.update({
        "DJANGO_SETTINGS_MODULE": "pbx.settings",
        "DATABASE_URL": db.url,
        "SIP_DOMAIN": DOMAIN,
        "SIP_REALM": DOMAIN,
        "SECRET_KEY": SECRET_KEY,
        "REGIS_DATA_DIR": str(data_dir),
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    })
    return env


def migrate(env: dict) -> float:
    started = time.perf_counter()
    completed = subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=REPO_ROOT,
                               env=env, capture_output=True, text=True, timeout=300)
    if completed.returncode:
        raise RuntimeError(f"migrate failed:\n{completed.stdout}\n{completed.stderr}")
    return time.perf_counter() - started


def dbtool(env: dict, *args, timeout: float = 600) -> dict:
    completed = subprocess.run([sys.executable, str(BENCH_DIR / "dbtool.py"), *map(str, args)], cwd=REPO_ROOT,
                               env=env, capture_output=True, text=True, timeout=timeout)
    if completed.returncode:
        raise RuntimeError(f"dbtool {' '.join(map(str, args))} failed:\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


# -- runsip ------------------------------------------------------------------------------
class RunSip:
    """``manage.py runsip --listen udp:127.0.0.1:PORT [--workers N]``, output to a log file."""

    def __init__(self, env: dict, port: int, workers: int, log_path: Path):
        self.env = env
        self.port = port
        self.workers = workers
        self.log_path = log_path
        self.process = None

    def start(self) -> float:
        command = [sys.executable, "manage.py", "runsip", "--listen", f"udp:{LOOPBACK}:{self.port}"]
        if self.workers > 1:
            command += ["--workers", str(self.workers)]
        started = time.perf_counter()
        self._log = open(self.log_path, "a")
        self._log.write(f"--- start {' '.join(command)}\n")
        self._log.flush()
        offset = self.log_path.stat().st_size
        self.process = subprocess.Popen(command, cwd=REPO_ROOT, env=self.env, stdin=subprocess.DEVNULL,
                                        stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            with open(self.log_path) as source:
                source.seek(offset)
                ready = source.read().count("Regis SIP ready")
            if ready >= self.workers:
                return time.perf_counter() - started
            if self.process.poll() is not None:
                raise RuntimeError(f"runsip exited with {self.process.returncode}:\n{self.tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"runsip not ready within {READY_TIMEOUT:.0f} s:\n{self.tail()}")
            time.sleep(0.05)

    def tail(self, size: int = 4000) -> str:
        text = self.log_path.read_text(errors="replace")
        return text[-size:]

    def pids(self) -> list:
        return process_tree(self.process.pid) if self.process else []

    def worker_pids(self) -> list:
        """The processes that serve SIP (the children when a supervisor runs several)."""
        tree = self.pids()
        return tree[1:] if self.workers > 1 else tree[:1]

    def cpu(self) -> float:
        return tree_cpu(self.process.pid)

    def memory(self) -> dict:
        per_worker = [memory_kib(pid) for pid in self.worker_pids()]
        return {
            "workers": len(per_worker),
            "rss_mib": round(sum(m.get("VmRSS", 0) for m in per_worker) / 1024, 1),
            "peak_rss_mib": round(sum(m.get("VmHWM", 0) for m in per_worker) / 1024, 1),
        }

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=STOP_TIMEOUT)
        self.process = None
        self._log.close()


# -- SIPp --------------------------------------------------------------------------------
def write_users_csv(path: Path, first: int, count: int) -> Path:
    """SIPp's injection file (the format of tests/e2e.write_users_csv)."""
    with open(path, "w") as out:
        out.write("SEQUENTIAL\n")
        for number in range(first, first + count):
            out.write(f"{number};[authentication username={number} password={PASSWORD}];\n")
    return path


class Sipp:
    """One SIPp run, started in the background; :meth:`wait` gives its numbers."""

    COUNTERS = ("SuccessfulCall(C)", "FailedCall(C)", "Retransmissions(C)", "OutgoingCall(C)",
                "FailedMaxUDPRetrans(C)", "FailedCallRejected(C)", "FailedUnexpectedMessage(C)",
                "FailedRegexpDoesntMatch(C)", "OutOfCallMsgs(C)", "DeadCallMsgs(C)", "FailedOutboundCongestion(C)",
                "FailedTimeoutOnRecv(C)")

    def __init__(self, port: int, workdir: Path, users_csv: Path, *, rate: float, calls: int, timeout: float,
                 multi_socket: bool = False, limit: int | None = None, local_port: int | None = None,
                 recv_timeout: int = 5, scenario: Path = SCENARIO):
        sipp = shutil.which("sipp")
        if sipp is None:
            raise RuntimeError("sipp is not installed (apt-get install sip-tester)")
        workdir.mkdir(parents=True, exist_ok=True)
        for name in ("stats.csv", "errors.log"):
            (workdir / name).unlink(missing_ok=True)
        self.workdir = workdir
        self.calls = calls
        self.timeout = timeout
        self.command = [
            sipp, f"{LOOPBACK}:{port}", "-sf", str(scenario), "-i", LOOPBACK,
            "-m", str(calls), "-r", str(rate), "-rp", "1000", "-l", str(limit or max(1000, int(rate * 3))),
            "-nostdin", "-timeout", f"{int(timeout)}s", "-recv_timeout", f"{recv_timeout}s", "-auth_uri", DOMAIN,
            "-max_non_invite_retrans", str(5 if recv_timeout <= 5 else 10),
            "-inf", str(users_csv), "-key", "domain", DOMAIN, "-key", "expires", "3600",
            "-cp", str(free_udp_port()), "-buff_size", str(4 * 1024 * 1024),
            "-trace_stat", "-stf", "stats.csv", "-fd", "1",
            "-trace_err", "-error_file", "errors.log", "-max_log_size", str(2 * 1024 * 1024),
        ]
        if multi_socket:
            # One socket per call, each on its own port (so no -p: SIPp would bind them
            # all to one port and the kernel would hand answers to the wrong call): with
            # --workers N the kernel's SO_REUSEPORT hashing spreads the calls across workers.
            self.command += ["-t", "un", "-max_socket", "1000"]
        else:
            self.command += ["-t", "u1", "-p", str(local_port or free_udp_port())]
        self.started = time.perf_counter()
        self._out = open(workdir / "stdout.txt", "w")
        self.process = subprocess.Popen(self.command, cwd=workdir, stdin=subprocess.DEVNULL, stdout=self._out,
                                        stderr=subprocess.STDOUT, start_new_session=True)

    def wait(self) -> dict:
        """Block until SIPp exits (bounded); its counters, wall time and CPU."""
        deadline = time.monotonic() + self.timeout + 20
        rusage = None
        returncode = None
        while True:
            pid, status, usage = os.wait4(self.process.pid, os.WNOHANG)
            if pid:
                rusage = usage
                returncode = os.waitstatus_to_exitcode(status)
                self.process.returncode = returncode
                break
            if time.monotonic() > deadline:
                os.killpg(self.process.pid, signal.SIGKILL)
                _, status, rusage = os.wait4(self.process.pid, 0)
                self.process.returncode = returncode = -999
                break
            time.sleep(0.02)
        wall = time.perf_counter() - self.started
        self._out.close()
        rows = _rows(self.workdir / "stats.csv")
        stats = rows[-1] if rows else {}
        counters = {name.removesuffix("(C)"): _int(stats.get(name)) for name in self.COUNTERS}
        completed = counters["SuccessfulCall"] or 0
        failed = counters["FailedCall"] or 0
        flow_ms = _sipp_time_ms(stats.get("ResponseTimeflow(C)"))
        repartition = {key.removeprefix("ResponseTimeRepartitionflow_"): _int(value) for key, value in stats.items()
                       if key.startswith("ResponseTimeRepartitionflow_")}
        return {
            "returncode": returncode,
            "calls": self.calls,
            "completed": completed,
            "failed": failed,
            "unfinished": max(0, self.calls - completed - failed),
            "retransmissions": counters["Retransmissions"] or 0,
            "wall_s": round(wall, 2),
            "achieved_per_s": round(completed / wall, 1) if wall else None,
            "sipp_cpu_s": round(rusage.ru_utime + rusage.ru_stime, 2) if rusage else None,
            # SIPp's own timing of all its flows: the mean, and how many fell in each bucket (ms)
            "sipp_mean_flow_ms": flow_ms,
            "sipp_flow_repartition": repartition,
            "sipp_flow_p50_le_ms": _bucket_bound(repartition, 0.50),
            "sipp_flow_p99_le_ms": _bucket_bound(repartition, 0.99),
            "counters": counters,
            "sipp_errors": _error_summary(self.workdir / "errors.log"),
            # [seconds since SIPp started, flows completed by then], one per statistics period
            "completed_by_time": [[_seconds_between(row.get("StartTime"), row.get("CurrentTime")),
                                   _int(row.get("SuccessfulCall(C)")) or 0] for row in rows],
        }


def _error_summary(path: Path, limit: int = 5) -> list:
    """The most frequent kinds of SIPp's error lines (numbers blanked), most frequent first."""
    if not path.exists():
        return []
    import re
    from collections import Counter

    kinds = Counter()
    with open(path, errors="replace") as source:
        for line in source:
            line = line.strip()
            if not line or line.startswith(("---", "Last message", "UDP message")):
                continue
            kinds[re.sub(r"\d+", "N", line)[:200]] += 1
    return [f"{count} × {kind}" for kind, count in kinds.most_common(limit)]


def _rows(path: Path) -> list:
    """SIPp's statistics file: one row per second (-fd 1) and a last one at the end."""
    if not path.exists():
        return []
    with open(path, newline="") as source:
        return list(csv.DictReader(source, delimiter=";"))


def _int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _sipp_time_ms(value):
    """SIPp's durations: HH:MM:SS:uuuuuu (microseconds) in the statistics file."""
    if not value:
        return None
    try:
        hours, minutes, seconds, micros = (int(part) for part in value.split(":"))
    except ValueError:
        return None
    return round(((hours * 60 + minutes) * 60 + seconds) * 1000 + micros / 1000, 2)


def _bucket_bound(repartition: dict, fraction: float):
    """The upper bound (ms) of SIPp's response-time bucket holding the ``fraction`` quantile;
    None past the last bound or without data."""
    total = sum(count or 0 for count in repartition.values())
    if not total:
        return None
    seen = 0
    for key, count in repartition.items():
        seen += count or 0
        if seen >= fraction * total:
            return int(key[1:]) if key.startswith("<") else None
    return None


def _seconds_between(start, current):
    """SIPp's StartTime and CurrentTime end with the epoch time: 'date<TAB>time<TAB>epoch'."""
    try:
        return round(float(current.split()[-1]) - float(start.split()[-1]), 2)
    except (AttributeError, IndexError, ValueError):
        return None


class QuietWaiter:
    """Waits (within a budget for the whole run) until the rest of the machine is idle.

    The benchmark measures one machine's capacity; other work on it (a test suite, a
    build) takes cores from runsip and SIPp. Before each measured run this waits until
    the machine less runsip, the database and this process has been below
    ``threshold`` % of one core for ``window`` seconds, for at most the remaining budget;
    the busy level it saw is recorded either way.
    """

    def __init__(self, budget: float, threshold: float = 25.0, window: float = 2.0):
        self.budget = budget
        self.threshold = threshold
        self.window = window
        self.waited = 0.0

    def wait(self, ctx) -> dict:
        """Also waits, up to ``SETTLE_LIMIT`` seconds and outside the budget, until runsip
        itself is idle again: after an overloaded run it may still be working off a
        backlog, which would otherwise count against the next run."""
        started = time.monotonic()
        settling = 0.0
        while True:
            busy0, own0 = machine_busy_cpu(), own_cpu()
            server0 = ctx.runsip.cpu() if ctx.runsip.alive() else 0.0
            meter = ctx.db.meter()
            if meter is not None:
                meter.start()
            time.sleep(self.window)
            split = meter.stop() if meter is not None else {"ours": 0.0, "background": 0.0}
            busy1, own1 = machine_busy_cpu(), own_cpu()
            server1 = ctx.runsip.cpu() if ctx.runsip.alive() else server0
            ours = (server1 - server0) + (own1 - own0) + split["ours"] + split["background"]
            other = 100 * max(0.0, (busy1 - busy0) - ours) / self.window
            server = 100 * (server1 - server0) / self.window
            if server >= self.SETTLE_CPU and settling < self.SETTLE_LIMIT:
                settling += self.window
                continue
            waited = time.monotonic() - started - settling
            if other < self.threshold or self.waited + waited >= self.budget:
                self.waited += waited
                return {"other_cpu_pct_before": round(other, 1), "waited_for_quiet_s": round(waited, 1),
                        "settled_s": round(settling, 1), "server_cpu_pct_before": round(server, 1)}

    SETTLE_CPU = 25.0     # % of a core: runsip serving only the probe uses a few
    SETTLE_LIMIT = 40.0


# -- one measured step ---------------------------------------------------------------------
def _latency(probe: Probe) -> dict:
    latencies, failures, retrans = probe.take()
    ms = [value * 1000 for value in latencies]
    return {
        "flows": len(ms),
        "failures": len(failures),
        "retransmissions": retrans,
        "p50_ms": _round(percentile(ms, 0.50)),
        "p90_ms": _round(percentile(ms, 0.90)),
        "p99_ms": _round(percentile(ms, 0.99)),
        "max_ms": _round(max(ms) if ms else None),
        "failure_examples": sorted(set(failures))[:3],
    }


def _round(value, digits=2):
    return None if value is None else round(value, digits)


def measured(ctx, label: str, sipp_kwargs: dict, during=None) -> dict:
    """Run SIPp once with CPU accounting and the probe's latency over exactly that run.

    ``during(sipp)`` runs while SIPp does (the mass expiry's purge); its result is kept.
    """
    quiet = ctx.quiet.wait(ctx)
    if quiet["other_cpu_pct_before"] >= ctx.quiet.threshold:
        log(f"  (the machine is busy with other work: {quiet['other_cpu_pct_before']:.0f}% of a core; "
            f"no quiet-wait budget left)")
    ctx.probe.take()
    meter = ctx.db.meter()
    if meter is not None:
        meter.start()
    server_cpu0, busy0, own0 = ctx.runsip.cpu(), machine_busy_cpu(), own_cpu()
    drops0, errors0 = udp_socket_drops(ctx.port) or 0, udp_receive_errors()
    started = time.perf_counter()
    sipp = Sipp(ctx.port, ctx.workdir / "sipp" / label, ctx.users_csv, multi_socket=ctx.workers > 1,
                local_port=ctx.sipp_port, **sipp_kwargs)
    extra = during(sipp) if during else None
    result = sipp.wait()
    wall = time.perf_counter() - started
    server_cpu1, busy1, own1 = ctx.runsip.cpu(), machine_busy_cpu(), own_cpu()
    db_split = meter.stop() if meter is not None else None
    drops1, errors1 = udp_socket_drops(ctx.port) or 0, udp_receive_errors()
    server = server_cpu1 - server_cpu0
    # The database's CPU: its backends for this database and the server's background
    # processes; other databases' backends are other work.
    db = (db_split["ours"] + db_split["background"]) if db_split else 0.0
    result["server_cpu_pct"] = round(100 * server / wall, 1)
    result["db_cpu_pct"] = round(100 * db / wall, 1) if db_split else None
    if db_split:
        result["db_cpu_split_pct"] = {kind: round(100 * seconds / wall, 1) for kind, seconds in db_split.items()}
    result["sipp_cpu_pct"] = round(100 * result["sipp_cpu_s"] / wall, 1) if result["sipp_cpu_s"] else None
    result["bench_cpu_pct"] = round(100 * (own1 - own0) / wall, 1)
    # Everything else the machine did meanwhile (other processes, interrupts): a high
    # number means the step shared the machine and its results are not to be trusted.
    result["other_cpu_pct"] = round(100 * max(0.0, (busy1 - busy0) - server - db - (result["sipp_cpu_s"] or 0)
                                              - (own1 - own0)) / wall, 1)
    result["udp_drops_server"] = drops1 - drops0
    result.update(quiet)
    result["udp_drops_machine"] = errors1 - errors0
    result["latency"] = _latency(ctx.probe)
    result["runsip_alive"] = ctx.runsip.alive()
    if extra is not None:
        result["during"] = extra
    return result


def is_clean(step: dict, target_rate: float) -> bool:
    """No failed or unfinished flow, no retransmission (SIPp's or the probe's), no
    probe failure, and SIPp achieved at least 90 % of the rate it was asked for."""
    return (step["failed"] == 0 and step["unfinished"] == 0 and step["retransmissions"] == 0
            and step["latency"]["failures"] == 0 and step["latency"]["retransmissions"] == 0
            and (step["achieved_per_s"] or 0) >= 0.9 * target_rate and step["runsip_alive"])


# -- the run for one database --------------------------------------------------------------
class Context:
    pass


RAMP_HEADER = (f"{'rate/s':>7} {'done':>7} {'failed':>6} {'unfin':>6} {'retrans':>7} {'drops':>6} {'achieved':>8} "
               f"{'srv cpu':>7} {'db cpu':>6} {'sipp cpu':>8} {'other':>6} {'p50 ms':>7} {'p99 ms':>7} "
               f"{'max ms':>7}  clean")


def ramp_row(rate, step) -> str:
    lat = step["latency"]

    def pct(value):
        return "-" if value is None else f"{value:.0f}%"

    def ms(value):
        return "-" if value is None else f"{value:.1f}"

    return (f"{rate:>7} {step['completed']:>7} {step['failed']:>6} {step['unfinished']:>6} "
            f"{step['retransmissions']:>7} {step['udp_drops_server']:>6} {step['achieved_per_s'] or 0:>8.0f} "
            f"{pct(step['server_cpu_pct']):>7} {pct(step['db_cpu_pct']):>6} {pct(step['sipp_cpu_pct']):>8} "
            f"{pct(step['other_cpu_pct']):>6} {ms(lat['p50_ms']):>7} "
            f"{ms(lat['p99_ms']):>7} {ms(lat['max_ms']):>7}  {'yes' if step['clean'] else 'NO'}")


def run_database(kind: str, args, out_dir: Path) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix=f"regis-bench-{kind}-"))
    data_dir = workdir / "data"
    data_dir.mkdir()
    db = Database(kind, workdir, args.pg_url)
    env = django_env(db, data_dir)
    result = {"database": kind, "workers": args.workers, "users": args.users}
    ctx = Context()
    ctx.db, ctx.workdir, ctx.workers = db, workdir, args.workers
    ctx.quiet = args.quiet_waiter
    ctx.port = free_udp_port()
    # SIPp sends from one port for the whole run, so that its phones keep one contact
    # each (a refresh) instead of adding a binding per step.
    ctx.sipp_port = free_udp_port()
    ctx.users_csv = write_users_csv(workdir / "users.csv", SIPP_FIRST, args.users)
    runsip = ctx.runsip = RunSip(env, ctx.port, args.workers, workdir / "runsip.log")
    probe = None
    log(f"\n=== {kind}: {db.url} (work files in {workdir})")
    try:
        db.create()
        migrate_s = migrate(env)
        prepared = dbtool(env, "prepare", "--range", f"{SIPP_FIRST}+{args.users}",
                          "--range", f"{PROBE_FIRST}+{PROBE_USERS}", "--password", PASSWORD)
        dbtool(env, "vacuum")
        result["setup"] = {"migrate_s": round(migrate_s, 2), "load_users_s": prepared["seconds"],
                           "extensions": prepared["extensions"]}
        log(f"migrated in {migrate_s:.1f} s; {prepared['extensions']} extensions loaded in {prepared['seconds']:.1f} s")

        ready_s = runsip.start()
        log(f"runsip ready in {ready_s:.1f} s on udp:{LOOPBACK}:{ctx.port} ({args.workers} worker(s))")
        probe = ctx.probe = Probe((LOOPBACK, ctx.port), [str(n) for n in range(PROBE_FIRST, PROBE_FIRST + PROBE_USERS)],
                                  PASSWORD, domain=DOMAIN, rate=args.probe_rate)
        probe.start()
        time.sleep(1.0)
        result["memory"] = {"users_loaded": {"extensions": prepared["extensions"], **runsip.memory()}}

        # -- the ramp
        log(f"\nramp: {args.duration:g} s per rate; probe {args.probe_rate:g} flows/s")
        log(RAMP_HEADER)
        steps, unclean_in_a_row = [], 0
        for rate in args.rates:
            calls = max(1, int(rate * args.duration))
            step = measured(ctx, f"rate-{rate}", {"rate": rate, "calls": calls,
                                                  "timeout": args.duration + 20})
            step["rate"] = rate
            step["clean"] = is_clean(step, rate)
            steps.append(step)
            log(ramp_row(rate, step))
            if not step["runsip_alive"]:
                log("runsip died:\n" + runsip.tail())
                break
            unclean_in_a_row = 0 if step["clean"] else unclean_in_a_row + 1
            if unclean_in_a_row >= 2 and not args.full_ramp:
                log("two rates in a row were not clean: the ramp stops here (--full-ramp runs every rate)")
                break
            time.sleep(PAUSE)
        result["ramp"] = steps
        clean = [step["rate"] for step in steps if step["clean"]]
        result["highest_clean_rate"] = max(clean) if clean else None
        log(f"highest clean rate: {result['highest_clean_rate']} flows/s")
        result["memory"]["after_ramp"] = runsip.memory()

        # -- profile (py-spy) at one rate, when asked
        if args.profile and kind == args.profile_db:
            rate = args.profile_rate or result["highest_clean_rate"] or args.rates[0]
            result["profile"] = profile_step(ctx, args, rate, out_dir)
            time.sleep(PAUSE)

        # -- avalanche after a restart
        if not args.skip_avalanche:
            result["avalanche"] = avalanche_step(ctx, args)
        if not runsip.alive():
            runsip.start()

        if not args.skip_100k:
            result.update(hundred_k_steps(ctx, args, env, result["highest_clean_rate"]))
    finally:
        if probe is not None:
            probe.stop()
        runsip.stop()
        result["runsip_log_tail"] = runsip.tail(1500) if runsip.log_path.exists() else ""
        if not args.keep_db:
            try:
                db.drop()
            except Exception as error:  # noqa: BLE001
                log(f"could not drop the benchmark database: {error}")
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"kept: {db.url} and {workdir}")
    return result


def avalanche_step(ctx, args) -> dict:
    """Restart runsip, then every SIPp user registers at once (-r avalanche_rate)."""
    ctx.runsip.stop()
    ready_s = ctx.runsip.start()
    time.sleep(1.0)
    phones = args.users
    # A phone gives up a REGISTER transaction after 64 × T1 = 32 s (Timer F): so does SIPp here.
    step = measured(ctx, "avalanche", {"rate": args.avalanche_rate, "calls": phones, "timeout": 90,
                                       "limit": phones, "recv_timeout": 32})
    step["phones"] = phones
    step["restart_ready_s"] = round(ready_s, 2)
    step["time_to_all_registered_s"] = step["wall_s"] if step["completed"] == phones else None
    for share in (50, 90, 99):
        # SIPp writes its statistics every second: these are upper bounds, to the second
        step[f"time_to_{share}pct_s"] = next(
            (elapsed for elapsed, done in step["completed_by_time"] if done >= phones * share / 100 and elapsed), None)
    log(f"\navalanche: {phones} phones at -r {args.avalanche_rate} after a restart (ready in {ready_s:.1f} s): "
        f"{step['completed']} registered in {step['wall_s']:.1f} s, {step['failed']} failed, "
        f"{step['unfinished']} unfinished, {step['retransmissions']} retransmissions, "
        f"{step['udp_drops_server']} dropped at the server socket; 50/90/99 % registered within "
        f"{step['time_to_50pct_s']}/{step['time_to_90pct_s']}/{step['time_to_99pct_s']} s; "
        f"server CPU {step['server_cpu_pct']}%; probe p50/p99 {step['latency']['p50_ms']}/"
        f"{step['latency']['p99_ms']} ms")
    time.sleep(PAUSE)
    return step


def hundred_k_steps(ctx, args, env, highest_clean) -> dict:
    out = {}
    runsip = ctx.runsip
    # Memory with 100k more extensions: runsip mirrors every credential.
    loaded = dbtool(env, "extensions", "--range", f"{BIG_FIRST}+{BIG_COUNT}", "--password", PASSWORD)
    dbtool(env, "vacuum")
    runsip.stop()
    ready_s = runsip.start()
    time.sleep(1.0)
    counts = dbtool(env, "counts")
    memory = out_memory = {"extensions": counts["extensions"], "bindings": counts["bindings"],
                           "ready_s": round(ready_s, 2), **runsip.memory()}
    log(f"\n100k: {loaded['extensions']} extensions bulk-loaded in {loaded['seconds']:.1f} s; runsip restarted "
        f"(ready in {ready_s:.1f} s) with {counts['extensions']} extensions: RSS {memory['rss_mib']} MiB")
    # ... and with 100k bindings (runsip holds credentials, not bindings).
    bound = dbtool(env, "bindings", "--first", BIG_FIRST, "--count", BIG_COUNT, "--batch", 1000)
    dbtool(env, "vacuum")
    time.sleep(1.0)
    counts = dbtool(env, "counts")
    with_bindings = {"extensions": counts["extensions"], "bindings": counts["bindings"], **runsip.memory()}
    log(f"100k: {bound['bindings']} bindings stored through services.store_registrations (batches of 1000) in "
        f"{bound['seconds']:.1f} s ({bound['bindings'] / max(bound['seconds'], 1e-9):.0f}/s); runsip RSS "
        f"{with_bindings['rss_mib']} MiB with {counts['bindings']} bindings")
    out["memory_100k"] = {"with_100k_extensions": out_memory, "with_100k_bindings": with_bindings,
                          "load": {"extensions_s": loaded["seconds"], "bindings_s": bound["seconds"]}}

    if not args.skip_pages:
        urls = []
        for url in PAGE_URLS:
            urls += ["--url", url]
        pages = dbtool(env, "pages", *urls, "--requests", args.page_requests, "--budget", 20,
                       timeout=600)["pages"]
        out["pages"] = {"bindings": counts["bindings"], "results": pages}
        for url, page in pages.items():
            if page.get("available"):
                log(f"page {url}: p50 {page['p50_ms']} ms, p95 {page['p95_ms']} ms over {page['requests']} "
                    f"requests ({page['queries']} queries, {page['bytes']} bytes)")
            else:
                log(f"page {url}: not available ({page.get('status') or page.get('error')})")

    if not args.skip_expiry:
        out["mass_expiry"] = mass_expiry_step(ctx, args, env, highest_clean)
    return out


def mass_expiry_step(ctx, args, env, highest_clean) -> dict:
    """Every binding expired, then purged in one go while SIPp keeps registering.

    First the same load without a purge (the baseline, which also re-registers SIPp's
    own users), then with ``services.purge_expired_bindings()`` started a few seconds
    in. The purge runs in a helper process that set Django up before the load started,
    so the start-up of a Python process is not part of what SIPp sees.
    """
    expired = dbtool(env, "expire")
    dbtool(env, "vacuum")
    rate = args.expiry_rate or max(100, min(1000, (highest_clean or 200) // 2))
    duration = args.expiry_duration
    sipp_kwargs = {"rate": rate, "calls": int(rate * duration), "timeout": duration + 40}
    baseline = measured(ctx, "expiry-baseline", sipp_kwargs)
    baseline["clean"] = is_clean(baseline, rate)
    time.sleep(PAUSE)
    purge = {}
    helper = subprocess.Popen([sys.executable, str(BENCH_DIR / "dbtool.py"), "purge", "--wait"], cwd=REPO_ROOT,
                              env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        if helper.stdout.readline().strip() != "ready":  # bounded: the helper exits on error
            raise RuntimeError("the purge helper did not start: " + helper.stderr.read()[-2000:])

        def during(sipp):
            time.sleep(min(3.0, duration / 4))
            started = time.perf_counter()
            try:
                out, err = helper.communicate("go\n", timeout=300)
                if helper.returncode:
                    purge["error"] = err[-1000:]
                else:
                    purge.update(json.loads(out.strip().splitlines()[-1]))
            except subprocess.TimeoutExpired:
                helper.kill()
                purge["error"] = "the purge took more than 300 s"
            purge["wall_s"] = round(time.perf_counter() - started, 3)
            return purge

        step = measured(ctx, "mass-expiry", sipp_kwargs, during=during)
    finally:
        if helper.poll() is None:
            helper.kill()
            helper.wait(timeout=10)
    step["rate"] = rate
    step["expired"] = expired["expired"]
    step["purge"] = purge
    step["clean"] = is_clean(step, rate)
    step["baseline"] = baseline

    def line(s):
        return (f"{s['completed']} done, {s['failed']} failed, {s['unfinished']} unfinished, "
                f"{s['retransmissions']} retransmissions, probe p50/p99/max {s['latency']['p50_ms']}/"
                f"{s['latency']['p99_ms']}/{s['latency']['max_ms']} ms")

    log(f"\nmass expiry: {expired['expired']} bindings expired; SIPp at {rate}/s for {duration:g} s without a purge: "
        f"{line(baseline)}")
    log(f"  with the purge: deleted {purge.get('deleted')} in {purge.get('seconds')} s: {line(step)}"
        + (f"; purge error: {purge['error']}" if purge.get("error") else ""))
    return step


# -- profiling -----------------------------------------------------------------------------
def profile_step(ctx, args, rate, out_dir: Path) -> dict:
    """py-spy (not a project dependency) samples runsip while SIPp runs at ``rate``."""
    py_spy = args.py_spy or shutil.which("py-spy")
    if not py_spy:
        log("profile: py-spy not found (pip install py-spy; --py-spy PATH); skipped")
        return {"skipped": "py-spy not found"}
    raw = ctx.workdir / "profile.folded"
    seconds = max(3, int(args.duration) - 2)
    holder = {}

    def during(sipp):
        time.sleep(1.0)
        command = [py_spy, "record", "--pid", str(ctx.runsip.worker_pids()[0]), "--duration", str(seconds),
                   "--rate", "100", "--format", "raw", "--output", str(raw), "--nonblocking", "--threads"]
        completed = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
        holder["returncode"] = completed.returncode
        holder["stderr"] = completed.stderr[-800:]
        return holder

    step = measured(ctx, "profile", {"rate": rate, "calls": int(rate * args.duration),
                                     "timeout": args.duration + 20}, during=during)
    step["rate"] = rate
    if not raw.exists():
        log(f"profile: py-spy wrote nothing: {holder.get('stderr')}")
        return {"rate": rate, "error": holder.get("stderr")}
    summary = summarize_profile(raw.read_text(), rate=rate, db=ctx.db.kind, step=step)
    (out_dir / "profile.txt").write_text(summary)
    shutil.copyfile(raw, out_dir / "profile.folded")
    log(f"\nprofile at {rate}/s written to {out_dir / 'profile.txt'} (server CPU {step['server_cpu_pct']}%)")
    return {"rate": rate, "server_cpu_pct": step["server_cpu_pct"], "completed": step["completed"],
            "file": "profile.txt"}


def summarize_profile(folded: str, *, rate, db, step) -> str:
    """Self and inclusive sample counts per function from py-spy's collapsed stacks."""
    own, inclusive, threads, total = {}, {}, {}, 0
    stacks = []
    for line in folded.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        count = int(count)
        total += count
        frames = stack.split(";")
        threads[frames[0]] = threads.get(frames[0], 0) + count
        names = [frame for frame in frames[1:]]
        if names:
            own[names[-1]] = own.get(names[-1], 0) + count
        for name in set(names):
            inclusive[name] = inclusive.get(name, 0) + count
        stacks.append((count, stack))
    lines = [
        f"py-spy profile of runsip ({db}) at {rate} flows/s, {total} samples (100 Hz, idle samples excluded)",
        f"during it: {step['completed']} flows, server CPU {step['server_cpu_pct']}%, "
        f"db CPU {step['db_cpu_pct']}%, SIPp CPU {step['sipp_cpu_pct']}%, retransmissions "
        f"{step['retransmissions']}, probe p50/p99 {step['latency']['p50_ms']}/{step['latency']['p99_ms']} ms",
        "",
        "== samples per thread",
    ]
    for name, count in sorted(threads.items(), key=lambda item: -item[1]):
        lines.append(f"{100 * count / max(total, 1):6.1f}%  {name}")
    lines += ["", "== top functions by own time (where the CPU is spent)"]
    for name, count in sorted(own.items(), key=lambda item: -item[1])[:40]:
        lines.append(f"{100 * count / max(total, 1):6.1f}%  {name}")
    lines += ["", "== top functions by inclusive time (the function and what it calls)"]
    for name, count in sorted(inclusive.items(), key=lambda item: -item[1])[:50]:
        lines.append(f"{100 * count / max(total, 1):6.1f}%  {name}")
    lines += ["", "== heaviest stacks (collapsed, root first; the whole set is profile.folded)"]
    for count, stack in sorted(stacks, key=lambda item: -item[0])[:40]:
        lines.append(f"{100 * count / max(total, 1):6.1f}%  {stack}")
    return "\n".join(lines) + "\n"


# -- reports -------------------------------------------------------------------------------
def write_markdown(report: dict, path: Path) -> None:
    m = report["machine"]
    lines = [
        "# Regis benchmark results",
        "",
        f"Run {report['started_at']} in {report['total_s']:.0f} s: `{report['command']}`",
        "",
        "| machine | |",
        "|---|---|",
        f"| CPUs (nproc) | {m['nproc']} × {m['cpu_model']} |",
        f"| RAM | {m['ram_mib']} MiB |",
        f"| Python | {m['python']} ({m.get('event_loop')}) |",
        f"| PostgreSQL | {m['postgresql']} "
        + (f"({', '.join(f'{k} {v}' for k, v in m['postgresql_settings'].items())})" if m.get('postgresql_settings')
           else "") + " |",
        f"| SQLite | {m['sqlite']} |",
        f"| SIPp | {m['sipp']} |",
        f"| kernel | {m['kernel']} |",
        f"| Regis commit | {m['git_commit']} |",
        "",
        "Flow = REGISTER → 401 → REGISTER with MD5 digest → 200 OK, over UDP on loopback. "
        "Latency = whole flows timed by the probe beside the load. CPU = % of one core over the step. "
        "Clean = no failed or unfinished flow, no retransmission, ≥ 90 % of the asked rate achieved.",
        "",
    ]
    for db in report["databases"]:
        kind = db["database"]
        lines += [f"## {kind}", ""]
        if db.get("error"):
            lines += [f"**failed:** `{db['error'][:500]}`", ""]
        if db.get("setup"):
            s = db["setup"]
            lines += [f"{s['extensions']} extensions ({db['users']} SIPp users + {PROBE_USERS} probe users), "
                      f"{db['workers']} runsip worker(s); migrate {s['migrate_s']} s, bulk load {s['load_users_s']} s.",
                      ""]
        runs = [step for step in db.get("ramp", [])] + [db[key] for key in ("avalanche", "mass_expiry") if db.get(key)]
        busy = [step for step in runs if (step.get("other_cpu_pct") or 0) > 25]
        if busy:
            lines += [f"⚠ The machine was shared: other work took more than 25 % of a core during {len(busy)} of "
                      f"{len(runs)} SIPp runs (the *other CPU* column); those rows understate Regis.", ""]
        if db.get("ramp"):
            lines += [f"**Highest clean rate: {db.get('highest_clean_rate') or 'none'} flows/s**", "",
                      "| rate/s | completed | failed | unfinished | retrans | server drops | achieved/s | server CPU | "
                      "DB CPU | SIPp CPU | other CPU | p50 ms | p99 ms | max ms | clean |",
                      "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|"]
            for step in db["ramp"]:
                lat = step["latency"]
                lines.append(
                    f"| {step['rate']} | {step['completed']} | {step['failed']} | {step['unfinished']} | "
                    f"{step['retransmissions']} | {step['udp_drops_server']} | {step['achieved_per_s']:.0f} | "
                    f"{_pct(step['server_cpu_pct'])} | {_pct(step['db_cpu_pct'], 'in-process')} | "
                    f"{_pct(step['sipp_cpu_pct'])} | {_pct(step['other_cpu_pct'])} | {lat['p50_ms']} | "
                    f"{lat['p99_ms']} | {lat['max_ms']} | {'yes' if step['clean'] else '**no**'} |")
            lines.append("")
        if db.get("avalanche"):
            a = db["avalanche"]
            lines += [f"**Avalanche** after a restart (ready again in {a['restart_ready_s']} s): {a['phones']} phones "
                      f"at SIPp -r {report['args']['avalanche_rate']} (each giving up after 32 s, Timer F): "
                      f"{a['completed']} registered in {a['wall_s']} s (50/90/99 % within {a['time_to_50pct_s']}/"
                      f"{a['time_to_90pct_s']}/{a['time_to_99pct_s']} s), {a['failed']} failed, {a['unfinished']} unfinished, "
                      f"{a['retransmissions']} retransmissions, {a['udp_drops_server']} datagrams dropped at the "
                      f"server's socket; server CPU {_pct(a['server_cpu_pct'])}, DB CPU "
                      f"{_pct(a['db_cpu_pct'], 'in-process')}, "
                      f"probe p50/p99/max {a['latency']['p50_ms']}/{a['latency']['p99_ms']}/{a['latency']['max_ms']} ms.",
                      ""]
        mem = db.get("memory", {})
        big = db.get("memory_100k", {})
        if mem or big:
            lines += ["| runsip memory | extensions | bindings | RSS MiB | peak RSS MiB |", "|---|---:|---:|---:|---:|"]
            if "users_loaded" in mem:
                u = mem["users_loaded"]
                lines.append(f"| idle, after start | {u['extensions']} | – | {u['rss_mib']} | {u['peak_rss_mib']} |")
            if "after_ramp" in mem:
                u = mem["after_ramp"]
                lines.append(f"| after the ramp | – | – | {u['rss_mib']} | {u['peak_rss_mib']} |")
            for label, key in (("restarted with 100k more extensions", "with_100k_extensions"),
                               ("… and 100k bindings", "with_100k_bindings")):
                if key in big:
                    u = big[key]
                    lines.append(f"| {label} | {u['extensions']} | {u['bindings']} | {u['rss_mib']} | "
                                 f"{u['peak_rss_mib']} |")
            lines.append("")
        if db.get("pages"):
            p = db["pages"]
            lines += [f"Pages at {p['bindings']} bindings (Django test client in process, logged-in superuser):", "",
                      "| URL | p50 ms | p95 ms | max ms | requests | queries | bytes |",
                      "|---|---:|---:|---:|---:|---:|---:|"]
            for url, page in p["results"].items():
                if page.get("available"):
                    lines.append(f"| `{url}` | {page['p50_ms']} | {page['p95_ms']} | {page['max_ms']} | "
                                 f"{page['requests']} | {page['queries'] if page['queries'] is not None else '–'} | {page['bytes']} |")
                else:
                    lines.append(f"| `{url}` | not available ({page.get('status') or page.get('error')}) | | | | | |")
            lines.append("")
        if db.get("mass_expiry"):
            e = db["mass_expiry"]
            purge, base = e["purge"], e["baseline"]
            lines += [f"**Mass expiry:** {e['expired']} bindings expired; SIPp at {e['rate']}/s for "
                      f"{report['args']['expiry_duration']} s, first without a purge, then with "
                      f"`services.purge_expired_bindings()` deleting {purge.get('deleted')} bindings in "
                      f"{purge.get('seconds')} s during the load"
                      + (f" (error: {purge['error'][:200]})" if purge.get("error") else "") + ":", "",
                      "| | completed | failed | unfinished | retrans | server drops | server CPU | DB CPU | p50 ms | "
                      "p99 ms | max ms | clean |",
                      "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|"]
            for label, s in (("without purge", base), ("with purge", e)):
                lat = s["latency"]
                lines.append(f"| {label} | {s['completed']} | {s['failed']} | {s['unfinished']} | "
                             f"{s['retransmissions']} | {s['udp_drops_server']} | {_pct(s['server_cpu_pct'])} | "
                             f"{_pct(s['db_cpu_pct'], 'in-process')} | {lat['p50_ms']} | {lat['p99_ms']} | "
                             f"{lat['max_ms']} | {'yes' if s['clean'] else '**no**'} |")
            lines.append("")
        if db.get("profile") and db["profile"].get("file"):
            lines += [f"py-spy profile at {db['profile']['rate']} flows/s: `profile.txt` (collapsed stacks: "
                      "`profile.folded`).", ""]
    if report.get("plot"):
        lines += ["![latency against rate](latency.png)", ""]
    path.write_text("\n".join(lines))


def _pct(value, none="–"):
    return none if value is None else f"{value:.0f} %"


def plot(report: dict, path: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    figure, axis = plt.subplots(figsize=(8, 5))
    styles = {"postgres": "tab:blue", "sqlite": "tab:orange"}
    plotted = False
    for db in report["databases"]:
        steps = [step for step in db.get("ramp", []) if step["latency"]["p50_ms"] is not None]
        if not steps:
            continue
        rates = [step["rate"] for step in steps]
        color = styles.get(db["database"])
        axis.plot(rates, [s["latency"]["p50_ms"] for s in steps], "o-", color=color, label=f"{db['database']} p50")
        axis.plot(rates, [s["latency"]["p99_ms"] for s in steps], "s--", color=color, label=f"{db['database']} p99")
        for step in steps:
            if not step["clean"]:
                for key in ("p50_ms", "p99_ms"):
                    axis.plot([step["rate"]], [step["latency"][key]], "x", color="red", markersize=10)
            lat = step["latency"]
            if lat["failures"]:
                share = 100 * lat["failures"] / (lat["failures"] + lat["flows"])
                axis.annotate(f"{share:.0f}% failed", (step["rate"], lat["p99_ms"]), textcoords="offset points",
                              xytext=(4, 6), fontsize=8, color=color)
        plotted = True
    if not plotted:
        plt.close(figure)
        return None
    axis.set_yscale("log")
    axis.set_xlabel("offered load (registration flows/s)")
    axis.set_ylabel("flow latency (ms, log scale)")
    axis.set_title(f"Regis runsip: REGISTER→401→REGISTER→200 latency of the probe's successful flows "
                   f"(red x = not clean)\n"
                   f"{report['machine']['nproc']} × {report['machine']['cpu_model']}", fontsize=10)
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path.name


# -- main ----------------------------------------------------------------------------------
def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="./regis bench", description="Benchmark runsip with SIPp on loopback (benchmarks/README.md).")
    parser.add_argument("--quick", action="store_true",
                        help="small and fast (1,000 users, 2 short rates, no 100k steps): the smoke test's run")
    parser.add_argument("--db", choices=("postgres", "sqlite", "both"), default="both")
    parser.add_argument("--pg-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_PG_URL),
                        help="PostgreSQL database to create, use and drop (default %(default)s; "
                             "env BENCH_DATABASE_URL)")
    parser.add_argument("--users", type=int, help="SIPp users (default 10,000; --quick 1,000)")
    parser.add_argument("--rates", help="comma-separated flows/s (default 500,1000,1500,2000,3000,4000,6000)")
    parser.add_argument("--duration", type=float, help="seconds per rate (default 12; --quick 3)")
    parser.add_argument("--full-ramp", action="store_true", help="run every rate even after two unclean ones")
    parser.add_argument("--workers", type=int, default=1, help="runsip --workers (default 1)")
    parser.add_argument("--probe-rate", type=float, default=20.0, help="latency probe flows/s (default 20)")
    parser.add_argument("--avalanche-rate", type=int, default=10_000, help="SIPp -r for the avalanche")
    parser.add_argument("--expiry-rate", type=int,
                        help="SIPp rate during the mass expiry (default: half the highest clean rate, 100..1000)")
    parser.add_argument("--expiry-duration", type=float, default=15.0, help="seconds of load during the mass expiry")
    parser.add_argument("--page-requests", type=int, default=30, help="requests per page (p95 over them)")
    parser.add_argument("--skip-avalanche", action="store_true")
    parser.add_argument("--skip-100k", action="store_true", help="skip memory, pages and mass expiry at 100k")
    parser.add_argument("--skip-pages", action="store_true")
    parser.add_argument("--skip-expiry", action="store_true")
    parser.add_argument("--profile", action="store_true", help="py-spy runsip at one rate -> profile.txt")
    parser.add_argument("--profile-rate", type=int, help="rate to profile at (default: the highest clean rate)")
    parser.add_argument("--profile-db", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--py-spy", help="py-spy executable (default: on PATH)")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results", help="results folder (default %(default)s)")
    parser.add_argument("--quiet-wait", type=float, default=180.0,
                        help="seconds in all to wait for other work on the machine to stop before runs (default 180)")
    parser.add_argument("--keep-db", action="store_true", help="keep the database and work files")
    args = parser.parse_args(argv)
    if args.quick:
        args.users = args.users or 1000
        args.rates = args.rates or "200,400"
        args.duration = args.duration or 3
        args.skip_100k = True
    args.users = args.users or 10_000
    args.rates = [int(rate) for rate in (args.rates or ",".join(map(str, DEFAULT_RATES))).split(",") if rate.strip()]
    args.duration = args.duration or 12.0
    args.quiet_waiter = QuietWaiter(0 if args.quick and args.quiet_wait == 180.0 else args.quiet_wait)
    if args.db != "both":
        args.profile_db = args.db
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if shutil.which("sipp") is None:
        log("sipp is not installed: apt-get install sip-tester (./regis bench installs it)")
        return 2
    started = time.perf_counter()
    out_dir = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    kinds = ["postgres", "sqlite"] if args.db == "both" else [args.db]
    machine = machine_info(args.pg_url if "postgres" in kinds else None)
    log(f"Regis benchmark on {machine['nproc']} × {machine['cpu_model']}, {machine['ram_mib']} MiB, "
        f"Python {machine['python']}, PostgreSQL {machine['postgresql']}, SQLite {machine['sqlite']}")
    report = {
        "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])]),
        "args": {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()
                 if key != "quiet_waiter"},
        "machine": machine,
        "databases": [],
    }
    exit_code = 0
    for kind in kinds:
        try:
            report["databases"].append(run_database(kind, args, out_dir))
        except Exception as error:  # noqa: BLE001 - one database failing still reports the other
            exit_code = 1
            log(f"{kind}: the benchmark failed: {error}")
            report["databases"].append({"database": kind, "error": str(error)[-3000:]})
    report["total_s"] = round(time.perf_counter() - started, 1)
    report["waited_for_quiet_s"] = round(args.quiet_waiter.waited, 1)
    report["plot"] = plot(report, out_dir / "latency.png")
    (out_dir / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    write_markdown(report, out_dir / "results.md")
    log(f"\ndone in {report['total_s']:.0f} s; results in {out_dir}/results.json, results.md"
        + (", latency.png" if report["plot"] else " (no plot: matplotlib not installed)"))
    for db in report["databases"]:
        if "ramp" in db:
            log(f"  {db['database']}: highest clean rate {db.get('highest_clean_rate')} flows/s")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
