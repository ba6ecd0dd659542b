"""Who may call each door of the API: one declared table, checked against the running app.

`tests/e2e/test_every_door.py` walks the OpenAPI document and the GraphQL schema and calls every
operation as anonymous, as each role and as a customer acting on another customer's resource;
it fails on any answer this table does not allow, and on any route without an entry here. The
routes enforce it with `requires(...)` and `Principal.assert_acts_for`; this table is what they
are held to (and what a reviewer reads).

Admin may call every door. `customers`: NO, OWN (on its own resources only: its id, its
reservations, carts, orders) or ANY (e.g. a product page). `anonymous`: no token needed (the
proof is elsewhere: a signature, a signed unsubscribe token, a client secret, or nothing is
private).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from instock.platform.principal import Role

MERCHANDISER, INVENTORY, FULFILMENT = Role.MERCHANDISER, Role.INVENTORY, Role.FULFILMENT
SUPPORT, SERVICE = Role.SUPPORT, Role.SERVICE
STAFF_ROLES = (MERCHANDISER, INVENTORY, FULFILMENT, SUPPORT, SERVICE)


class Customers(StrEnum):
    NO = "no"
    OWN = "own"
    ANY = "any"


NO, OWN, ANY = Customers.NO, Customers.OWN, Customers.ANY


@dataclass(frozen=True)
class Door:
    roles: frozenset[Role]  # staff roles let in (admin always is)
    customers: Customers = NO
    anonymous: bool = False

    def lets_in(self, role: Role | None) -> bool:
        """Whether `role` (None: no token) gets past the door (a customer: on its own)."""
        if role is None:
            return self.anonymous
        if role is Role.ADMIN:
            return True
        if role is Role.CUSTOMER:
            return self.customers is not NO
        return role in self.roles


def door(*roles: Role, customers: Customers = NO, anonymous: bool = False) -> Door:
    return Door(frozenset(roles), customers, anonymous)


PUBLIC = door(*STAFF_ROLES, customers=ANY, anonymous=True)

REST: dict[str, Door] = {
    # catalogue and stock
    "POST /v1/products": door(MERCHANDISER),
    "GET /v1/products/{product_id}": door(*STAFF_ROLES, customers=ANY),
    "PATCH /v1/products/{product_id}": door(MERCHANDISER),
    "GET /v1/locations": door(*STAFF_ROLES),
    "POST /v1/locations": door(INVENTORY),
    "PUT /v1/channels/{channel_id}": door(MERCHANDISER),
    "GET /v1/channels/{channel_id}": door(*STAFF_ROLES),
    "GET /v1/inventory/{sku}": door(*STAFF_ROLES),
    "POST /v1/inventory/adjustments": door(INVENTORY, FULFILMENT),
    "PUT /v1/inventory/{sku}/policy": door(MERCHANDISER, INVENTORY),
    "GET /v1/ledger": door(*STAFF_ROLES),
    "GET /v1/stream/inventory": PUBLIC,
    "GET /v1/stream/reservations": door(*STAFF_ROLES),
    "GET /v1/stream/ledger": door(*STAFF_ROLES),
    # reservations, carts, checkout, orders
    "POST /v1/reservations": door(SUPPORT, SERVICE, customers=OWN),
    "GET /v1/reservations/{reservation_id}": door(SUPPORT, SERVICE, customers=OWN),
    "POST /v1/reservations/{reservation_id}/commit": door(SUPPORT, SERVICE, customers=OWN),
    "POST /v1/reservations/{reservation_id}/release": door(SUPPORT, SERVICE, customers=OWN),
    "POST /v1/reservations/{reservation_id}/extend": door(SUPPORT, SERVICE, customers=OWN),
    "POST /v1/carts": door(SUPPORT, SERVICE, customers=OWN),
    "GET /v1/carts/{cart_id}": door(SUPPORT, SERVICE, customers=OWN),
    "POST /v1/carts/{cart_id}/items": door(SUPPORT, SERVICE, customers=OWN),
    "DELETE /v1/carts/{cart_id}/items/{sku}": door(SUPPORT, SERVICE, customers=OWN),
    "POST /v1/carts/{cart_id}/touch": door(SUPPORT, SERVICE, customers=OWN),
    "POST /v1/checkout": door(SUPPORT, SERVICE, customers=OWN),
    "GET /v1/orders/{order_id}": door(*STAFF_ROLES, customers=OWN),
    "GET /v1/orders": door(*STAFF_ROLES, customers=OWN),
    "POST /v1/orders/{order_id}/cancel": door(SUPPORT, SERVICE, customers=OWN),
    "POST /v1/orders/{order_id}/fulfil": door(FULFILMENT),
    "POST /v1/orders/{order_id}/ship": door(FULFILMENT),
    "POST /v1/orders/{order_id}/deliver": door(FULFILMENT),
    "POST /v1/orders/{order_id}/returns": door(SUPPORT, SERVICE),
    # customers, waitlist, drops, polls, notifications, recommendations
    "PUT /v1/customers/{customer_id}": door(SUPPORT, customers=OWN),
    "GET /v1/customers/{customer_id}": door(SUPPORT, customers=OWN),
    "GET /v1/customers/{customer_id}/export": door(SUPPORT, customers=OWN),
    "POST /v1/customers/{customer_id}/erase": door(SUPPORT, customers=OWN),
    "GET /v1/analytics/skus/{sku}": door(*STAFF_ROLES),
    "GET /v1/analytics/skus/{sku}/days": door(*STAFF_ROLES),
    "GET /v1/analytics/drops/{sku}": door(*STAFF_ROLES),
    "GET /v1/analytics/reorder": door(*STAFF_ROLES),
    "GET /v1/analytics/products/{product_id}": door(*STAFF_ROLES),
    "GET /v1/analytics/products/{product_id}/size-curve": door(*STAFF_ROLES),
    "POST /v1/waitlist": door(SUPPORT, SERVICE, customers=OWN),
    "GET /v1/waitlist": door(SUPPORT, SERVICE, customers=OWN),
    "DELETE /v1/waitlist/{sku}": door(SUPPORT, SERVICE, customers=OWN),
    "POST /v1/drops": door(MERCHANDISER),
    "GET /v1/drops/{drop_id}": door(*STAFF_ROLES, customers=ANY),
    "GET /v1/drops/{drop_id}/challenge": door(SUPPORT, SERVICE, customers=OWN),
    "POST /v1/drops/{drop_id}/tickets": door(SUPPORT, SERVICE, customers=OWN),
    "GET /v1/drops/{drop_id}/tickets/{ticket}": door(SUPPORT, SERVICE, customers=OWN),
    # The signed ticket in the path is the stream's credential (EventSource sends no headers);
    # the stream never carries the pass.
    "GET /v1/drops/{drop_id}/tickets/{ticket}/events": PUBLIC,
    "POST /v1/drops/{drop_id}/entries": door(SUPPORT, SERVICE, customers=OWN),
    "GET /v1/drops/{drop_id}/entries/{entry_id}": door(SUPPORT, SERVICE, customers=OWN),
    "POST /v1/drops/{drop_id}/draw": door(MERCHANDISER),
    "GET /v1/drops/{drop_id}/draw": door(*STAFF_ROLES, customers=ANY),
    "GET /v1/drops": door(MERCHANDISER, SUPPORT),
    "GET /v1/drops/{drop_id}/held": door(MERCHANDISER, SUPPORT),
    "POST /v1/drops/{drop_id}/held/{customer_id}": door(MERCHANDISER, SUPPORT),
    "POST /v1/polls": door(MERCHANDISER),
    "GET /v1/polls/next": door(MERCHANDISER, SUPPORT, SERVICE, customers=OWN, anonymous=True),
    "GET /v1/polls/{poll_id}": door(MERCHANDISER, SUPPORT, SERVICE),
    "POST /v1/polls/{poll_id}/answers": door(MERCHANDISER, SUPPORT, SERVICE, customers=OWN,
                                             anonymous=True),
    "GET /v1/polls/{poll_id}/results": door(MERCHANDISER),
    "GET /v1/notifications": door(SUPPORT),
    "POST /v1/notifications/unsubscribe": PUBLIC,  # the signed token in the link is the proof
    "POST /v1/events": door(MERCHANDISER, SUPPORT, SERVICE, customers=OWN),
    "GET /v1/recommendations": door(MERCHANDISER, SUPPORT, SERVICE, customers=OWN),
    "POST /v1/experiments": door(MERCHANDISER),
    "GET /v1/experiments": door(MERCHANDISER),
    "GET /v1/experiments/{experiment_id}": door(MERCHANDISER),
    "POST /v1/experiments/{experiment_id}/start": door(MERCHANDISER),
    "POST /v1/experiments/{experiment_id}/stop": door(MERCHANDISER),
    "GET /v1/experiments/{experiment_id}/results": door(MERCHANDISER),
    # marketplaces, payments and outbound webhooks
    "PUT /v1/channels/{channel_id}/connection": door(MERCHANDISER),
    "GET /v1/channels/{channel_id}/connection": door(*STAFF_ROLES),
    "GET /v1/channels/{channel_id}/listings": door(*STAFF_ROLES),
    "GET /v1/channels/{channel_id}/orders": door(*STAFF_ROLES),
    "POST /v1/webhooks/marketplaces/{channel_id}": PUBLIC,  # signed by the marketplace
    "POST /v1/webhooks/payments/{provider}": PUBLIC,  # signed by the provider
    "GET /v1/webhooks/subscriptions": door(),
    "POST /v1/webhooks/subscriptions": door(),
    "GET /v1/webhooks/subscriptions/{subscription_id}": door(),
    "PATCH /v1/webhooks/subscriptions/{subscription_id}": door(),
    "DELETE /v1/webhooks/subscriptions/{subscription_id}": door(),
    "GET /v1/webhooks/subscriptions/{subscription_id}/deliveries": door(),
    "GET /v1/webhooks/deliveries/{delivery_id}": door(),
    "POST /v1/webhooks/deliveries/{delivery_id}/redeliver": door(),
    "POST /v1/webhooks/subscriptions/{subscription_id}/test": door(),
    # operations
    "GET /v1/reconciliation/drifts": door(*STAFF_ROLES),
    "POST /v1/reconciliation/drifts/{drift_id}/approve": door(INVENTORY),
    "POST /v1/reconciliation/drifts/{drift_id}/reject": door(INVENTORY),
    # identity
    "POST /v1/oauth/token": PUBLIC,  # the client's secret is the proof
    "GET /v1/oauth/clients": door(),
    "POST /v1/oauth/clients": door(),
    "POST /v1/oauth/clients/{client_id}/revoke": door(),
    "GET /.well-known/jwks.json": PUBLIC,
}

# GraphQL (`/graphql` over HTTP and WebSocket): root fields, and the fields of types that check
# roles themselves. Anonymous shoppers browse, ask for their session's list and answer polls.
GRAPHQL: dict[str, Door] = {
    "Query.product": PUBLIC,
    "Query.products": PUBLIC,
    "Stock.lots": door(*STAFF_ROLES),
    "Stock.detail": door(*STAFF_ROLES),
    "Query.inventory": door(*STAFF_ROLES),
    "Query.ledger": door(*STAFF_ROLES),
    "Query.audit": door(*STAFF_ROLES),
    "Query.reservation": door(SUPPORT, SERVICE, customers=OWN),
    "Query.cart": door(SUPPORT, SERVICE, customers=OWN),
    "Query.order": door(*STAFF_ROLES, customers=OWN),
    "Query.orders": door(*STAFF_ROLES, customers=OWN),
    "Query.recommendations": door(MERCHANDISER, SUPPORT, SERVICE, customers=OWN,
                                  anonymous=True),
    "Query.experiments": door(MERCHANDISER),
    "Query.webhookDeliveries": door(),
    "Query.customer": door(SUPPORT, customers=OWN),
    "Query.nextPoll": PUBLIC,
    "Query.skuAnalytics": door(*STAFF_ROLES),
    "Query.dropCurves": door(*STAFF_ROLES),
    "Query.salesDays": door(*STAFF_ROLES),
    "Query.reorderLists": door(*STAFF_ROLES),
    "Query.drop": door(*STAFF_ROLES, customers=ANY),
    "Query.dropTicket": door(SUPPORT, SERVICE, customers=OWN),
    "Query.drawEntry": door(SUPPORT, SERVICE, customers=OWN),
    "Query.dropDraw": door(*STAFF_ROLES, customers=ANY),
    "Mutation.reserve": door(SUPPORT, SERVICE, customers=OWN),
    "Mutation.release": door(SUPPORT, SERVICE, customers=OWN),
    "Mutation.adjustStock": door(INVENTORY, FULFILMENT),
    "Mutation.setPolicy": door(MERCHANDISER, INVENTORY),
    "Mutation.addToCart": door(SUPPORT, SERVICE, customers=OWN),
    "Mutation.removeFromCart": door(SUPPORT, SERVICE, customers=OWN),
    "Mutation.checkout": door(SUPPORT, SERVICE, customers=OWN),
    "Mutation.recordEvents": door(MERCHANDISER, SUPPORT, SERVICE, customers=OWN),
    "Mutation.joinWaitlist": door(SUPPORT, SERVICE, customers=OWN),
    "Mutation.updateCustomer": door(SUPPORT, customers=OWN),
    "Mutation.answerPoll": door(MERCHANDISER, SUPPORT, SERVICE, customers=OWN, anonymous=True),
    "Mutation.scheduleDrop": door(MERCHANDISER),
    "Mutation.takeDropTicket": door(SUPPORT, SERVICE, customers=OWN),
    "Mutation.enterDraw": door(SUPPORT, SERVICE, customers=OWN),
    "Subscription.stockChanged": PUBLIC,
    "Subscription.ledger": door(*STAFF_ROLES),
    "Subscription.reservations": door(*STAFF_ROLES),
    "Subscription.orders": door(*STAFF_ROLES),
    "Subscription.reservationChanged": door(SUPPORT, SERVICE, customers=OWN),
    "Subscription.orderChanged": door(*STAFF_ROLES, customers=OWN),
    "Subscription.recommendationsChanged": door(MERCHANDISER, SUPPORT, SERVICE, customers=OWN,
                                                anonymous=True),
    # The signed ticket is the credential, as for the SSE stream; it never carries the pass.
    "Subscription.dropStanding": PUBLIC,
}

# The REST WebSocket (`/v1/ws`): stock for anyone; the staff streams need a staff token.
WEBSOCKET: dict[str, Door] = {
    "WS /v1/ws stock": PUBLIC,
    "WS /v1/ws stream:reservations": door(*STAFF_ROLES),
    "WS /v1/ws stream:ledger": door(*STAFF_ROLES),
}
