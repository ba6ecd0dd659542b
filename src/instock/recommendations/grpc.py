"""Recommendations over gRPC (proto/instock/rpc/recommendations.proto), for a storefront
backend that prefers it to REST: `Recommend` answers what `GET /v1/recommendations` does, from
the same service call. Callers are services (platform/rpc.py authenticates them), which act for
any shopper, as a storefront backend does."""

from __future__ import annotations

import re

import grpc

from instock.platform.errors import ValidationFailed
from instock.platform.principal import Principal
from instock.platform.rpc import answered
from instock.platform.tokens import TokenAuthority
from instock.recommendations.api import CONTEXT_PATTERN
from instock.recommendations.service import RecommendationsService
from instock.rpc import recommendations_pb2 as pb
from instock.rpc import recommendations_pb2_grpc as pb_grpc

SERVICE_NAME = "instock.recommendations.v1.Recommendations"
MAX_LIMIT = 50  # as the REST route
_CONTEXT = re.compile(CONTEXT_PATTERN)


class RecommendationsServicer(pb_grpc.RecommendationsServicer):
    def __init__(self, recommendations: RecommendationsService, tokens: TokenAuthority) -> None:
        self.recommendations = recommendations
        self.tokens = tokens

    def add_to(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_RecommendationsServicer_to_server(self, server)

    async def Recommend(self, request: pb.RecommendRequest,
                        context: grpc.aio.ServicerContext) -> pb.RecommendResponse:
        async def work(caller: Principal) -> pb.RecommendResponse:
            customer_id = request.customer_id if request.HasField("customer_id") else None
            session_id = request.session_id if request.HasField("session_id") else None
            where = request.context or "home"
            limit = request.limit or 10
            if not (customer_id or session_id):
                raise ValidationFailed("customer_id", "customer_id or session_id is required")
            if not _CONTEXT.match(where):
                raise ValidationFailed("context", "home, cart, or product:{product_id}")
            if not 1 <= limit <= MAX_LIMIT:
                raise ValidationFailed("limit", f"between 1 and {MAX_LIMIT}")
            served = await self.recommendations.recommend(customer_id, session_id, where, limit)
            experiment = (pb.Experiment(id=served.assignment.experiment_id,
                                        variant=served.assignment.variant)
                          if served.assignment else None)
            return pb.RecommendResponse(context=where, cached=served.cached,
                                        experiment=experiment, items=[
                pb.RecommendedItem(
                    product_id=item["product_id"], sku=item["sku"], title=item["title"],
                    brand=item["brand"], category=item["category"],
                    in_your_size=item.get("in_your_size"), score=float(item["score"]),
                    reason=pb.Reason(code=item["reason"]["code"], text=item["reason"]["text"]))
                for item in served.items])
        return await answered(context, self.tokens, work, "Recommendations/Recommend")
