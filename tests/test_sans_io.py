"""The SIP core stays sans-IO: nothing under registrar/sip imports Django, asyncio, sockets or the clock."""
import ast
from pathlib import Path

import pytest

SIP_CORE = Path(__file__).resolve().parent.parent / "registrar" / "sip"
FORBIDDEN = {"django", "asyncio", "socket", "time", "uvloop", "selectors", "threading", "ssl"}


def imported_modules(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module.split(".")[0]


@pytest.mark.parametrize("path", sorted(SIP_CORE.glob("*.py")), ids=lambda p: p.name)
def test_it_imports_no_io(path):
    assert not set(imported_modules(path)) & FORBIDDEN


def test_it_reads_no_clock():
    for path in SIP_CORE.glob("*.py"):
        source = path.read_text()
        for call in ("datetime.now(", "datetime.utcnow(", "date.today("):
            assert call not in source, f"{path.name} reads the clock with {call}"
