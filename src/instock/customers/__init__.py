"""Customers: profiles (contact, sizes, preferences, consents), their personal data sealed."""
