"""Marketplace channels: connectors, available-to-sell pushes, marketplace orders, reconcile."""
