"""Events the channels context publishes."""

from __future__ import annotations
