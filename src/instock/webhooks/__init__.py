"""Outbound webhooks: subscriptions, signed deliveries, retries and dead letters."""
