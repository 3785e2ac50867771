"""Providers: one file each (sandbox, smtp), all with `async def send(message) -> SendResult`;
plus the Redis delivery ledger that makes sending at most once."""
