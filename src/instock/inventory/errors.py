"""What an inventory command can end in besides success, as problem+json types, and the
translation of the pure model's errors into them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from instock.inventory import model
from instock.platform.errors import Conflict
from instock.platform.telemetry import OVERSELL_PREVENTED, RESERVATIONS

# Resolved once: `labels()` takes a lock and a lookup, on every refused reservation of a drop.
# Refusals are counted here because every one of them is translated here, once.
_INSUFFICIENT, _LIMITED = (RESERVATIONS.labels(outcome) for outcome in ("insufficient", "limit"))


class InsufficientStockConflict(Conflict):
    """The API's answer (409) to the model's `StockShortfall`, each short line listed."""

    slug, title = "insufficient-stock", "Not enough stock for some lines"


class CustomerLimitExceeded(Conflict):
    slug, title = "customer-limit-exceeded", "Per-customer limit reached"


class StockRuleViolated(Conflict):
    slug, title = "stock-rule-violated", "The change would break a stock rule"


class InvalidTransition(Conflict):
    slug, title = "invalid-transition", "Not allowed in the reservation's current state"


def translated(exc: model.StockError) -> Conflict:
    """The house's problem type for an error of the pure model."""
    match exc:
        case model.StockShortfall():
            _INSUFFICIENT.inc()
            OVERSELL_PREVENTED.inc(sum(max(0, s.requested - s.available) for s in exc.shortages))
            return InsufficientStockConflict(str(exc), short=[
                {"sku": s.sku, "requested": s.requested, "available": s.available}
                for s in exc.shortages])
        case model.LimitExceeded():
            _LIMITED.inc()
            return CustomerLimitExceeded(str(exc), sku=exc.sku, limit=exc.limit, held=exc.held)
        case model.NegativeBucket():
            return StockRuleViolated(str(exc), problems=exc.problems)
        case model.IllegalTransition():
            return InvalidTransition(str(exc))
    return StockRuleViolated(str(exc))


@contextmanager
def domain_errors() -> Iterator[None]:
    """Translate the pure model's errors into the house's problem types."""
    try:
        yield
    except model.StockError as exc:
        raise translated(exc) from exc
