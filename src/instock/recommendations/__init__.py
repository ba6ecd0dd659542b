"""Recommendations: behaviour events, the hybrid engine, per-shopper lists, evaluation."""
