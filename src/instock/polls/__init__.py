"""Polls: on-site micro-polls whose answers become preferences (recommendations, profiles)."""
