"""instock: a real-time commerce backend for brands that sell in drops."""
