"""Catalog: products, variants (one SKU per size/colour), prices and bundles."""
