"""Orders persistence."""

from __future__ import annotations
