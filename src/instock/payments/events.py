"""Events the payments context publishes."""

from __future__ import annotations
