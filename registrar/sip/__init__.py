"""The sans-IO SIP core.

Bytes and ``now`` go in; parsed messages, decisions and bytes come out. Nothing in
this package imports Django, asyncio or socket, and nothing reads the clock: the
adapters in ``registrar.worker`` own the network and time (tests/test_sans_io.py
enforces this).
"""
