"""Providers, one file each with `async def send(outbound) -> SendResult` (sandbox, smtp,
twilio_sms, slack, webhook); and the Redis pieces around them: the delivery ledger (dedupe),
the shared circuit breaker, the rate limiter, held notifications (schedule) and digests."""
