"""Helpers for the end-to-end tests: a real ``manage.py runsip`` driven over loopback.

* :class:`RunSip` starts the SIP worker as a subprocess, waits (bounded) for its
  ``ready`` line and stops it with SIGTERM;
* :func:`run_sipp` runs a SIPp scenario from ``tests/sipp/`` with bounded timeouts,
  everything it writes going to a temporary folder;
* :class:`SipClient` is a small independent SIP client (raw sockets, its own digest
  computation per RFC 7616 with ``hashlib``) for what SIPp 3.6 cannot do, such as
  answering a SHA-256 challenge. It deliberately does not import the project's digest
  code: the point is to check the server against a second implementation.
"""
import contextlib
import csv
import hashlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
SIPP_DIR = TESTS_DIR / "sipp"
SEEDS_DIR = TESTS_DIR / "data" / "seeds"

SIP_DOMAIN = "regis.test"
LOOPBACK = "127.0.0.1"
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


# -- ports and database ----------------------------------------------------------------
def free_port(host: str = LOOPBACK) -> int:
    """A port number free for both UDP and TCP on ``host`` (the OS picks it)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no port free for both UDP and TCP on " + host)


def database_url(db: dict) -> str:
    """A DATABASE_URL for the database described by a Django ``DATABASES`` entry.

    Call it after pytest-django has set up the test database: ``NAME`` is then the
    test database's name, which the runsip subprocess must use too.
    """
    engine = db["ENGINE"]
    if engine == "django.db.backends.sqlite3":
        name = str(db["NAME"])
        if name == ":memory:" or name.startswith("file:"):
            raise RuntimeError("the end-to-end tests need a file SQLite test database, not " + name)
        return "sqlite:///" + str(Path(name).resolve())
    if engine in ("django.db.backends.postgresql", "django.db.backends.postgresql_psycopg2"):
        scheme = "postgres"
    elif engine == "django.db.backends.mysql":
        scheme = "mysql"
    else:
        raise RuntimeError(f"no DATABASE_URL scheme known for {engine}")
    user = quote(str(db.get("USER") or ""), safe="")
    password = quote(str(db.get("PASSWORD") or ""), safe="")
    credentials = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = str(db.get("HOST") or "")
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"{scheme}://{credentials}{host}{port}/{quote(str(db['NAME']), safe='')}"


def eventually(check, timeout: float = 5.0):
    """Poll ``check()`` until it is truthy or ``timeout`` passes; its last value.

    runsip re-reads credentials, soft parameters and bans every 0.5 s, and records
    attempts after it has answered, so effects seen from the test are eventual."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


# -- the SIP worker --------------------------------------------------------------------
class ManagedProcess:
    """A server the tests start as a subprocess: output captured for assertion messages,
    a bounded wait until it is ready, SIGTERM (then SIGKILL) to stop; a context manager.

    Subclasses give :meth:`command`, :meth:`environment` and :meth:`is_ready`.
    """

    name = "process"

    def __init__(self, *, ready_timeout: float = READY_TIMEOUT):
        self.ready_timeout = ready_timeout
        self.process = None
        self.stop_requested = False
        self._lines = []
        self._lock = threading.Lock()
        self._threads = []

    def command(self) -> list:
        raise NotImplementedError

    def environment(self) -> dict:
        raise NotImplementedError

    def is_ready(self) -> bool:
        raise NotImplementedError

    def on_line(self, label: str, line: str) -> None:
        """Called for every line printed (label "out" or "err")."""

    @property
    def output(self) -> str:
        with self._lock:
            return "".join(self._lines)

    def _pump(self, stream, label):
        for line in iter(stream.readline, ""):
            with self._lock:
                self._lines.append(f"[{label}] {line}")
            self.on_line(label, line)
        stream.close()

    def start(self):
        self.process = subprocess.Popen(
            self.command(), cwd=REPO_ROOT, env=self.environment(), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
        )
        for stream, label in ((self.process.stdout, "out"), (self.process.stderr, "err")):
            thread = threading.Thread(target=self._pump, args=(stream, label), daemon=True)
            thread.start()
            self._threads.append(thread)
        deadline = time.monotonic() + self.ready_timeout
        while not self.is_ready():
            if self.process.poll() is not None:
                self._join_pumps()
                raise RuntimeError(f"{self.name} exited with {self.process.returncode} before it was ready:\n"
                                   f"{self.output}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} was not ready within {self.ready_timeout:.0f} s:\n{self.output}")
            time.sleep(0.05)
        return self

    def _join_pumps(self):
        for thread in self._threads:
            thread.join(timeout=2)

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL if it has not stopped within STOP_TIMEOUT; the exit code."""
        if self.process is None:
            return None
        self.stop_requested = True
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT)
                with self._lock:
                    self._lines.append(f"[test] {self.name} did not stop on SIGTERM; killed\n")
        self._join_pumps()
        return self.process.returncode

    @property
    def died(self) -> bool:
        """Whether it exited without being asked to."""
        return self.process is not None and not self.stop_requested and self.process.poll() is not None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()


# What asyncio logs when a callback or task of runsip's raised: never part of a passing run.
LOOP_ERRORS = ("Unhandled exception in event loop", "Task exception was never retrieved")


@contextlib.contextmanager
def runsip_starter(database_url: str, **defaults):
    """``start(**kwargs)`` runs a runsip on ``database_url`` (``defaults`` and ``kwargs`` go to
    :class:`RunSip`) and returns it started; all are stopped on leaving, and a test whose
    runsip died on the way fails with its output."""
    import pytest

    started = []

    def start(env=None, **kwargs):
        if env is not None:
            kwargs["env"] = env
        runsip = RunSip(database_url, **{**defaults, **kwargs})
        started.append(runsip)
        return runsip.start()

    try:
        yield start
    finally:
        deaths, errors = [], []
        for runsip in started:
            died = runsip.died
            runsip.stop()
            if died:
                deaths.append(f"(exit {runsip.process.returncode}):\n{runsip.output}")
            elif any(sign in runsip.output for sign in LOOP_ERRORS):
                errors.append(runsip.output)
        if deaths:
            pytest.fail("runsip died during the test " + "\n".join(deaths))
        if errors:
            pytest.fail("runsip's event loop met an unhandled exception:\n" + "\n".join(errors))


class RunSip(ManagedProcess):
    """``python manage.py runsip`` on loopback, UDP and TCP on the same free port (and
    with ``tls=True`` TLS on another: its certificate from SIP_TLS_CERT/SIP_TLS_KEY in
    ``env``, or generated into REGIS_DATA_DIR); ready when it prints its ``ready`` line."""

    name = "runsip"

    def __init__(self, db_url: str, *, port: int | None = None, env: dict | None = None,
                 ready_timeout: float = READY_TIMEOUT, extra_args: tuple = (), tls: bool = False,
                 tls_port: int | None = None):
        super().__init__(ready_timeout=ready_timeout)
        self.extra_args = tuple(extra_args)
        self.port = port or free_port()
        self.tls_port = (tls_port or free_port()) if tls or tls_port else None
        self.db_url = db_url
        self.extra_env = env or {}
        self._ready = threading.Event()

    def command(self) -> list:
        return [sys.executable, "manage.py", "runsip",
                "--listen", f"udp:{LOOPBACK}:{self.port}", "--listen", f"tcp:{LOOPBACK}:{self.port}",
                *(["--listen", f"tls:{LOOPBACK}:{self.tls_port}"] if self.tls_port else []),
                *self.extra_args]

    def environment(self) -> dict:
        env = dict(os.environ)
        env.update({
            "DJANGO_SETTINGS_MODULE": "pbx.settings",
            "DATABASE_URL": self.db_url,
            "SIP_DOMAIN": SIP_DOMAIN,
            "SIP_REALM": SIP_DOMAIN,
            "PYTHONUNBUFFERED": "1",
        })
        env.update(self.extra_env)
        return env

    def on_line(self, label, line):
        if label == "out" and re.search(r"\bready\b", line):
            self._ready.set()

    def is_ready(self) -> bool:
        return self._ready.is_set()

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def tls_address(self) -> str:
        return f"{LOOPBACK}:{self.tls_port}"


# -- SIPp ------------------------------------------------------------------------------
@dataclass
class SippResult:
    returncode: int
    workdir: Path
    command: list
    local_port: int
    stats: dict = field(default_factory=dict)

    def _read(self, name: str, limit: int = 6000) -> str:
        path = self.workdir / name
        if not path.exists():
            return ""
        text = path.read_text(errors="replace")
        return text if len(text) <= limit else "...\n" + text[-limit:]

    @property
    def errors(self) -> str:
        return self._read("errors.log")

    @property
    def messages(self) -> str:
        return self._read("messages.log", limit=20000)

    @property
    def screen(self) -> str:
        return self._read("stdout.txt", limit=3000)

    def received(self) -> list:
        """The SIP messages SIPp received, in order (from its -trace_msg log)."""
        path = self.workdir / "messages.log"
        if not path.exists():
            return []
        blocks = re.split(r"(?m)^-{10,} .*$", path.read_text(errors="replace"))
        return [block.split("\n", 2)[2].strip() for block in blocks
                if re.match(r"\s*\w+ message received", block)]

    def responses_to(self, cseq: int) -> list:
        """The responses SIPp received to its request with this CSeq number."""
        return [text for text in self.received() if re.search(rf"(?m)^CSeq:\s*{cseq} ", text)]

    def counter(self, name: str) -> int:
        """A cumulative counter of the statistics file, e.g. 'SuccessfulCall' or 'FailedCall'."""
        return int(self.stats[f"{name}(C)"])

    def report(self) -> str:
        return (f"sipp exited with {self.returncode}: {' '.join(map(str, self.command))}\n"
                f"--- errors.log\n{self.errors}\n--- screen\n{self.screen}\n--- messages\n{self.messages}")


def write_users_csv(path: Path, users) -> Path:
    """A SIPp injection file: field0 the user, field1 its [authentication] keyword.

    SIPp 3.6 does not expand keywords nested in [authentication ...], so the whole
    keyword is injected (the way SIPp's documentation shows).
    """
    with open(path, "w", newline="") as out:
        out.write("SEQUENTIAL\n")
        for user, password in users:
            out.write(f"{user};[authentication username={user} password={password}];\n")
    return path


def run_sipp(scenario: str, remote: str, workdir: Path, *, transport: str = "u1", calls: int = 1,
             rate: int | None = None, users_csv: Path | None = None, keys: dict | None = None,
             global_timeout: int = 60, recv_timeout: str = "5s", trace_msg: bool = True) -> SippResult:
    """Run SIPp in ``workdir`` (a copy of the scenario there; every file it writes there too).

    ``-timeout`` bounds SIPp itself (and makes reaching it an error), ``-recv_timeout``
    bounds each expected answer, and the subprocess timeout bounds everything else.
    """
    sipp = shutil.which("sipp")
    if sipp is None:
        raise RuntimeError("sipp is not installed")
    workdir.mkdir(parents=True, exist_ok=True)
    scenario_path = workdir / scenario
    shutil.copyfile(SIPP_DIR / scenario, scenario_path)
    local_port = free_port()
    all_keys = {"domain": SIP_DOMAIN, "expires": 3600}
    all_keys.update(keys or {})
    command = [
        sipp, remote, "-sf", scenario_path.name, "-t", transport, "-i", LOOPBACK, "-p", str(local_port),
        "-m", str(calls), "-nostdin", "-timeout", f"{global_timeout}s", "-timeout_error",
        "-recv_timeout", recv_timeout, "-auth_uri", SIP_DOMAIN, "-cp", str(free_port()),
        "-trace_err", "-error_file", "errors.log",
        "-trace_stat", "-stf", "stats.csv", "-fd", "1",
    ]
    if trace_msg:
        command += ["-trace_msg", "-message_file", "messages.log"]
    if rate is not None:
        command += ["-r", str(rate), "-rp", "1000"]
    if users_csv is not None:
        command += ["-inf", str(users_csv)]
    for name, value in all_keys.items():
        command += ["-key", name, str(value)]
    with open(workdir / "stdout.txt", "w") as out:
        try:
            completed = subprocess.run(command, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out,
                                       stderr=subprocess.STDOUT, timeout=global_timeout + 30)
            returncode = completed.returncode
        except subprocess.TimeoutExpired:
            returncode = -999
    result = SippResult(returncode, workdir, command, local_port)
    result.stats = _last_stats(workdir / "stats.csv")
    return result


def _last_stats(path: Path) -> dict:
    if not path.exists():
        return {}
    with open(path, newline="") as source:
        rows = list(csv.DictReader(source, delimiter=";"))
    return rows[-1] if rows else {}


# -- an independent SIP client ---------------------------------------------------------
@dataclass
class SipResponse:
    status: int
    reason: str
    headers: list  # (name, value) in order
    raw: bytes

    def get_all(self, name: str) -> list:
        return [value for key, value in self.headers if key.lower() == name.lower()]

    def get(self, name: str) -> str | None:
        values = self.get_all(name)
        return values[0] if values else None

    @property
    def header_names(self) -> list:
        return [key.lower() for key, _ in self.headers]


_COMPACT = {"v": "Via", "f": "From", "t": "To", "i": "Call-ID", "m": "Contact", "l": "Content-Length",
            "k": "Supported", "c": "Content-Type", "e": "Content-Encoding", "s": "Subject"}


def parse_response(data: bytes) -> SipResponse:
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", errors="replace")
    lines = head.split("\r\n")
    match = re.match(r"SIP/2\.0 (\d{3}) ?(.*)", lines[0])
    if not match:
        raise ValueError(f"not a SIP response: {lines[0]!r}")
    headers = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:  # folded continuation
            name, value = headers[-1]
            headers[-1] = (name, value + " " + line.strip())
            continue
        name, _, value = line.partition(":")
        name = name.strip()
        headers.append((_COMPACT.get(name.lower(), name), value.strip()))
    return SipResponse(int(match.group(1)), match.group(2), headers, data)


_PARAM = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*,?')


def parse_challenge(value: str) -> dict:
    """The parameters of one ``Digest ...`` challenge (lowercase names, unquoted values)."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise ValueError(f"not a Digest challenge: {value!r}")
    params = {}
    for name, raw in _PARAM.findall(rest):
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params[name.lower()] = raw
    return params


_HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256,
           "SHA-512-256": lambda data=b"": hashlib.new("sha512_256", data)}


def _h(algorithm: str, text: str) -> str:
    return _HASHES[algorithm](text.encode("utf-8")).hexdigest()


def digest_response(*, algorithm: str, username: str, realm: str, password: str, method: str, uri: str,
                    nonce: str, nc: str, cnonce: str, qop: str = "auth") -> str:
    """RFC 7616 §3.4.1 response for qop=auth: KD(H(A1), nonce:nc:cnonce:qop:H(A2))."""
    ha1 = _h(algorithm, f"{username}:{realm}:{password}")
    ha2 = _h(algorithm, f"{method}:{uri}")
    return _h(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


def authorization(challenge: dict, *, username: str, password: str, method: str, uri: str,
                  nc: int = 1, cnonce: str | None = None) -> str:
    algorithm = challenge.get("algorithm", "MD5")
    cnonce = cnonce or secrets.token_hex(8)
    nc_text = f"{nc:08x}"
    response = digest_response(algorithm=algorithm, username=username, realm=challenge["realm"],
                               password=password, method=method, uri=uri, nonce=challenge["nonce"],
                               nc=nc_text, cnonce=cnonce)
    value = (f'Digest username="{username}", realm="{challenge["realm"]}", nonce="{challenge["nonce"]}", '
             f'uri="{uri}", response="{response}", algorithm={algorithm}, qop=auth, nc={nc_text}, '
             f'cnonce="{cnonce}"')
    if "opaque" in challenge:
        value += f', opaque="{challenge["opaque"]}"'
    return value


class SipClient:
    """A phone on a loopback UDP, TCP or TLS socket that sends REGISTERs and reads answers.

    For "tls", ``ssl_context`` verifies the server (for instance
    ``ssl.create_default_context(cafile=its_certificate)``) as ``server_hostname``."""

    def __init__(self, server: tuple, transport: str = "udp", timeout: float = 5.0, bind_host: str = LOOPBACK,
                 ssl_context=None, server_hostname: str = "localhost"):
        self.server = server
        self.host = bind_host
        self.transport = transport
        self.timeout = timeout
        kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
        self.sock = socket.socket(socket.AF_INET, kind)
        self.sock.settimeout(timeout)
        if transport == "udp":
            self.sock.bind((bind_host, 0))
        else:
            self.sock.bind((bind_host, 0))
            self.sock.connect(server)
        if transport == "tls":
            self.sock = ssl_context.wrap_socket(self.sock, server_hostname=server_hostname)
        self.local_port = self.sock.getsockname()[1]
        self.call_id = secrets.token_hex(12) + "@" + bind_host
        self.tag = secrets.token_hex(6)
        self.cseq = 0
        self._buffer = b""

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def register(self, user: str, *, expires: int = 3600, authorization_value: str | None = None,
                 domain: str = SIP_DOMAIN, contact: bool = True, user_agent: str = "regis-e2e",
                 scheme: str = "sip") -> SipResponse:
        """``scheme="sips"`` uses SIPS URIs throughout (RFC 5630: no transport parameter)."""
        self.cseq += 1
        via_transport = self.transport.upper()
        lines = [
            f"REGISTER {scheme}:{domain} SIP/2.0",
            f"Via: SIP/2.0/{via_transport} {self.host}:{self.local_port};branch=z9hG4bK{secrets.token_hex(8)};rport",
            "Max-Forwards: 70",
            f"From: <{scheme}:{user}@{domain}>;tag={self.tag}",
            f"To: <{scheme}:{user}@{domain}>",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq} REGISTER",
        ]
        if contact and scheme == "sips":
            lines.append(f"Contact: <sips:{user}@{self.host}:{self.local_port}>")
        elif contact:
            lines.append(f"Contact: <sip:{user}@{self.host}:{self.local_port};transport={self.transport}>")
        lines.append(f"Expires: {expires}")
        if authorization_value:
            lines.append(f"Authorization: {authorization_value}")
        lines += [f"User-Agent: {user_agent}", "Content-Length: 0"]
        return self.request(("\r\n".join(lines) + "\r\n\r\n").encode())

    def request(self, data: bytes) -> SipResponse:
        """Send one request; the first final response to it (provisional ones skipped).

        Over UDP the request is retransmitted as RFC 3261 §17.1.2.2 says (Timer E:
        500 ms, doubling up to 4 s), as a phone would when a datagram is lost.
        """
        self.send(data)
        deadline = time.monotonic() + self.timeout
        interval = 0.5
        next_send = time.monotonic() + interval
        while True:
            now = time.monotonic()
            if now > deadline:
                raise TimeoutError("no final response")
            if self.transport == "udp":
                if now >= next_send:
                    self.send(data)
                    interval = min(interval * 2, 4.0)
                    next_send = now + interval
                self.sock.settimeout(max(0.01, min(next_send, deadline) - now))
                try:
                    raw = self.receive()
                except (TimeoutError, socket.timeout):
                    continue
                finally:
                    self.sock.settimeout(self.timeout)
            else:
                raw = self.receive()
            response = parse_response(raw)
            if response.status >= 200:
                return response

    def send(self, data: bytes) -> None:
        if self.transport == "udp":
            self.sock.sendto(data, self.server)
        else:
            self.sock.sendall(data)

    def receive(self) -> bytes:
        if self.transport == "udp":
            data, _ = self.sock.recvfrom(65535)
            return data
        while True:
            head, separator, rest = self._buffer.partition(b"\r\n\r\n")
            if separator:
                match = re.search(rb"(?im)^(?:content-length|l)\s*:\s*(\d+)", head)
                length = int(match.group(1)) if match else 0
                if len(rest) >= length:
                    self._buffer = rest[length:]
                    return head + separator + rest[:length]
            chunk = self.sock.recv(65535)
            if not chunk:
                raise ConnectionError("the server closed the TCP connection")
            self._buffer += chunk

    def register_with_digest(self, user: str, password: str, *, algorithm: str, expires: int = 3600,
                             domain: str = SIP_DOMAIN, scheme: str = "sip") -> tuple[SipResponse, SipResponse]:
        """REGISTER, answer the challenge for ``algorithm``: (the 401, the final answer)."""
        challenge_response = self.register(user, expires=expires, domain=domain, scheme=scheme)
        if challenge_response.status != 401:
            return challenge_response, challenge_response
        challenges = [parse_challenge(v) for v in challenge_response.get_all("WWW-Authenticate")]
        chosen = next((c for c in challenges if c.get("algorithm", "MD5").upper() == algorithm.upper()), None)
        if chosen is None:
            raise AssertionError(f"no {algorithm} challenge in {challenge_response.get_all('WWW-Authenticate')}")
        value = authorization(chosen, username=user, password=password, method="REGISTER", uri=f"{scheme}:{domain}")
        return challenge_response, self.register(user, expires=expires, domain=domain, authorization_value=value,
                                                 scheme=scheme)


# -- seed messages ---------------------------------------------------------------------
def load_seed(name: str, *, local_port: int) -> bytes:
    """A seed REGISTER from tests/data/seeds with the phone's address made ours.

    The files keep the field addresses; the Via and Contact host:port become
    127.0.0.1 and the port we send from. The Request-URI, From and To keep the
    gateway's address: the registrar uses only their user part.
    """
    text = (SEEDS_DIR / name).read_bytes().decode("utf-8")
    head, _, _ = text.partition("\r\n\r\n")
    out = []
    for line in head.split("\r\n"):
        name_part = line.split(":", 1)[0].strip().lower()
        if name_part == "via":
            line = re.sub(r"(SIP/2\.0/\w+\s+)[^;\s]+", rf"\g<1>{LOOPBACK}:{local_port}", line)
        elif name_part == "contact":
            line = re.sub(r"@[^;>]+", f"@{LOOPBACK}:{local_port}", line)
        out.append(line)
    return ("\r\n".join(out) + "\r\n\r\n").encode("utf-8")
