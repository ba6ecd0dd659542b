"""Back-in-stock waitlist: customers wait for a sold-out SKU and are told once when it returns."""
