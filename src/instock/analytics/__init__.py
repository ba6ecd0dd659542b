"""Inventory analytics: hourly sales facts from the event stream, velocity that excludes the
time an item was out of stock, days of cover, forecasts and drop sell-out curves."""
