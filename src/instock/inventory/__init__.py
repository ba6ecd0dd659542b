"""Inventory: locations, channels, stock levels in buckets, lots, reservations and the ledger."""
