"""Local servers speaking the wire format of providers that cannot be reached from a test
machine (Twilio, Slack), so the official SDKs can be pointed at them unchanged.

Each is an async context manager listening on a free loopback port; it records every request,
and a test can make it misbehave (rate limits, server errors, provider error codes)."""
