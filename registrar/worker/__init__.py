"""The SIP worker: asyncio transports around the sans-IO core, and the database thread."""
