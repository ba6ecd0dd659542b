"""Experiments in GraphQL (merchandisers): each with its results, rendered as REST renders."""

from __future__ import annotations

import strawberry
from strawberry.experimental.pydantic import type as from_model
from strawberry.scalars import JSON

from instock.experiments import api
from instock.experiments.model import Status, Unit
from instock.experiments.service import ExperimentsService
from instock.platform.auth import Role
from instock.platform.graphql import Info, require

strawberry.enum(Status, name="ExperimentStatus")
strawberry.enum(Unit, name="ExperimentUnit")


def service(info: Info) -> ExperimentsService:
    svc: ExperimentsService = info.context.state.experiments
    return svc


@from_model(model=api.VariantOut, all_fields=True)
class ExperimentVariantConfig:
    config: JSON


@from_model(model=api.KindOut, all_fields=True)
class Conversion:
    pass


@from_model(model=api.VariantResultOut, all_fields=True)
class VariantResult:
    pass


@from_model(model=api.ExperimentOut, all_fields=True)
class Experiment:
    id: strawberry.auto

    @strawberry.field(description="exposures and conversions per variant against the control")
    async def results(self, info: Info) -> list[VariantResult]:
        found = api.render_results(await service(info).results(self.id))
        return [VariantResult.from_pydantic(v) for v in found.variants]


@strawberry.type
class ExperimentsQuery:
    @strawberry.field(description="merchandiser: A/B tests of recommendation models")
    async def experiments(self, info: Info, status: Status | None = None) -> list[Experiment]:
        require(info, Role.MERCHANDISER)
        return [Experiment.from_pydantic(api.render_experiment(e))
                for e in await service(info).list(status)]
