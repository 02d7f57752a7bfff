"""Helpers for the browser tests: daphne and runsip as subprocesses, headless chromium.

* :class:`Daphne` serves ``pbx.asgi:application`` on a free loopback port, waits
  (bounded) until the port accepts connections and stops it with SIGTERM;
* :func:`relay_socket_path` is a short Unix socket path for ``LIVE_RELAY_SOCKET``: in
  the embedded default (no REDIS_URL) the SIP worker sends its live events there as
  datagrams and the web process relays them to the browsers, so both subprocesses
  must get the same path (``sun_path`` is limited to 108 bytes, hence /tmp);
* :func:`launch_chromium` starts Debian's chromium through Playwright (sync API),
  never a downloaded browser, with the flags that keep it off the network;
* :func:`screenshot` saves into pytest's ``tmp_path`` and, when ``REGIS_SCREENSHOTS``
  names a folder, there as well under a descriptive name.

The SIP side (runsip, SIPp, users CSV) is :mod:`tests.e2e`.
"""
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

from tests import e2e

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
# Every Playwright wait is bounded by this (milliseconds).
TIMEOUT_MS = 15_000
WEB_READY_TIMEOUT = 30.0
SCREENSHOTS_ENV = "REGIS_SCREENSHOTS"


def missing_requirements() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing (apt-get install -y chromium)"
    if shutil.which("sipp") is None:
        return "SIPp is not installed (apt-get install sip-tester)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed"
    return None


def relay_socket_path() -> str:
    """A fresh, short path for the live relay's Unix datagram socket."""
    return os.path.join(tempfile.mkdtemp(prefix="regis-", dir="/tmp"), "live.sock")


def remove_relay_socket(path: str) -> None:
    folder = os.path.dirname(path)
    shutil.rmtree(folder, ignore_errors=True)


def process_environment(db_url: str, relay_socket: str) -> dict:
    """What both subprocesses (daphne and runsip) run with: same database, same relay."""
    env = dict(os.environ)
    env.pop("REDIS_URL", None)
    env.update({
        "DJANGO_SETTINGS_MODULE": "pbx.settings",
        "DATABASE_URL": db_url,
        "SIP_DOMAIN": e2e.SIP_DOMAIN,
        "SIP_REALM": e2e.SIP_DOMAIN,
        "LIVE_RELAY_SOCKET": relay_socket,
        "PYTHONUNBUFFERED": "1",
    })
    return env


class Daphne(e2e.ManagedProcess):
    """``python -m daphne`` serving Regis on loopback; ready when its port accepts connections."""

    name = "daphne"

    def __init__(self, env: dict, *, port: int | None = None, ready_timeout: float = WEB_READY_TIMEOUT):
        super().__init__(ready_timeout=ready_timeout)
        self.port = port or e2e.free_port()
        self.env = env

    @property
    def url(self) -> str:
        return f"http://{e2e.LOOPBACK}:{self.port}"

    def command(self) -> list:
        return [sys.executable, "-m", "daphne", "-b", e2e.LOOPBACK, "-p", str(self.port), "pbx.asgi:application"]

    def environment(self) -> dict:
        return self.env

    def is_ready(self) -> bool:
        try:
            with socket.create_connection((e2e.LOOPBACK, self.port), timeout=0.5):
                return True
        except OSError:
            return False


# -- the browser -----------------------------------------------------------------------
def launch_chromium(playwright):
    """Debian's chromium, headless, kept off the network (no Google background calls)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
                                      timeout=TIMEOUT_MS)


def new_page(browser, base_url: str):
    """A fresh context (own cookies) and page; every wait bounded by TIMEOUT_MS."""
    context = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    context.set_default_navigation_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.console_messages_seen = []
    page.on("console", lambda message: page.console_messages_seen.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: page.console_messages_seen.append(f"pageerror: {error}"))
    return page


def screenshot(page, tmp_path: Path, name: str) -> Path:
    """A full-page PNG in ``tmp_path``; a copy in $REGIS_SCREENSHOTS when it is set."""
    path = Path(tmp_path) / name
    page.screenshot(path=str(path), full_page=True)
    folder = os.environ.get(SCREENSHOTS_ENV)
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(folder) / name)
    return path


def wait_live(page) -> None:
    """Until the page says its websocket to /ws/live/ is open."""
    page.wait_for_selector('body[data-live="connected"]', state="attached", timeout=TIMEOUT_MS)


def login(page, username: str, password: str, *, path: str = "/login/", submit: str = "button[type=submit]"):
    page.goto(path)
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    with page.expect_navigation():
        page.click(submit)


def mark_no_reload(page) -> None:
    """A flag that only survives while the document does: a reload clears it."""
    page.evaluate("window.__noReload = 1")


def still_not_reloaded(page) -> bool:
    return page.evaluate("window.__noReload === 1")
