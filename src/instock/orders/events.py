"""Events the orders context publishes."""

from __future__ import annotations
