"""Payments: one provider interface (sandbox, Stripe), resilient calls, the payments' state."""
