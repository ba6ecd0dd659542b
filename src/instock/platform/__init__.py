"""Cross-cutting adapters: database, auth, errors, idempotency, telemetry. No business rules."""
