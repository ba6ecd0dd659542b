"""Events the webhooks context publishes."""

from __future__ import annotations
