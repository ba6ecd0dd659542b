"""Whose work the current task does (WORK_ORIGIN), for the database counters on /metrics
(instock_db_statements_total{origin}, instock_db_transactions_total{origin}).

Set once by each HTTP request (`request`) and by each background loop (retry.keep_running: its
name, or `consumer:<name>`); asyncio tasks copy their creator's context, so the work a request
or a loop starts (a group-commit batch, say) counts as theirs. Anything else is `other`.
"""

from __future__ import annotations

from contextvars import ContextVar

WORK_ORIGIN: ContextVar[str] = ContextVar("instock_work_origin", default="other")
