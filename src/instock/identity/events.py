"""Identity publishes no events yet: a client's registration and revocation are in its table,
and revocations reach every API process by its poll (service.follow_revocations)."""
