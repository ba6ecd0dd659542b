"""Experiment routes: define A/B tests of recommendation models, start and stop them, and read
their results."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from instock.experiments.model import (
    MAX_NAME,
    MAX_VARIANT_NAME,
    MAX_VARIANTS,
    MIN_VARIANTS,
    Comparison,
    Experiment,
    Kind,
    Status,
    Unit,
    Variant,
    VariantResult,
)
from instock.experiments.service import ExperimentsService, Results
from instock.platform.auth import Principal, Role, requires
from instock.platform.errors import problem_responses
from instock.platform.telemetry import correlation_id

router = APIRouter(prefix="/v1/experiments", tags=["experiments"],
                   responses=problem_responses(400, 401, 403, 404, 409, 422))
MANAGE = requires(Role.MERCHANDISER)  # and admin

ID_PATTERN = r"^[0-9A-Fa-f-]{1,36}$"  # the ids instock makes are UUIDv7
ExperimentId = Annotated[str, Path(pattern=ID_PATTERN)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME)]
VariantName = Annotated[str, StringConstraints(min_length=1, max_length=MAX_VARIANT_NAME)]
ModelName = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Weight = Annotated[float, Field(ge=0, allow_inf_nan=False)]


# async: FastAPI runs a plain `def` dependency in a worker thread, on every request.
async def service(request: Request) -> ExperimentsService:
    svc: ExperimentsService = request.app.state.experiments
    return svc


class ConfigIn(BaseModel):
    """How the recommendation engine serves this variant; both fields optional."""

    model_config = ConfigDict(extra="forbid")
    model: ModelName | None = Field(default=None, description="a model the engine knows")
    weights: dict[ModelName, Weight] | None = Field(
        default=None, max_length=32, description="model name -> non-negative blend weight")


class VariantIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: VariantName = Field(description='unique; the one named "control" (else the first) '
                                          "is the control")
    share: float = Field(gt=0, le=1, allow_inf_nan=False,
                         description="the share of subjects; the shares sum to 1")
    config: ConfigIn = Field(default_factory=ConfigIn)


class ExperimentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name
    unit: Unit = Field(default=Unit.CUSTOMER, description="what subjects are: customers or "
                                                           "sessions")
    variants: list[VariantIn] = Field(min_length=MIN_VARIANTS, max_length=MAX_VARIANTS)


class VariantOut(BaseModel):
    name: str
    share: float
    config: dict[str, Any]
    control: bool


class ExperimentOut(BaseModel):
    id: str
    name: str
    status: Status
    unit: Unit
    variants: list[VariantOut]
    created_at: datetime
    started_at: datetime | None
    stopped_at: datetime | None


class KindOut(BaseModel):
    converted: int = Field(description="exposed subjects who converted after their exposure")
    rate: float | None = Field(description="converted / exposed; null with no exposures")
    difference: float | None = Field(description="rate minus the control's rate")
    uplift: float | None = Field(description="difference / the control's rate; null when the "
                                             "control's rate is 0")
    z: float | None = Field(description="pooled two-proportion z statistic")
    p_value: float | None = Field(description="two-sided")
    ci_low: float | None = Field(description="lower bound of the difference's confidence "
                                             "interval (unpooled)")
    ci_high: float | None
    significant: bool = Field(description="p_value < alpha")


class VariantResultOut(BaseModel):
    name: str
    control: bool
    exposed: int = Field(description="subjects assigned and shown this variant")
    click: KindOut
    add_to_cart: KindOut
    purchase: KindOut


class ResultsOut(BaseModel):
    experiment: ExperimentOut
    alpha: float = Field(description="significance level of each variant-vs-control test "
                                     "(not corrected for several variants)")
    variants: list[VariantResultOut]


def render_experiment(e: Experiment) -> ExperimentOut:
    control = e.control.name
    return ExperimentOut(
        id=e.id, name=e.name, status=e.status, unit=e.unit, created_at=e.created_at,
        started_at=e.started_at, stopped_at=e.stopped_at,
        variants=[VariantOut(name=v.name, share=v.share, config=v.config,
                             control=v.name == control) for v in e.variants])


def _kind(converted: int, c: Comparison, is_control: bool) -> KindOut:
    versus = not is_control  # the control compared with itself says nothing
    return KindOut(converted=converted, rate=c.rate_variant,
                   difference=c.difference if versus else None,
                   uplift=c.uplift if versus else None, z=c.z if versus else None,
                   p_value=c.p_value if versus else None, ci_low=c.ci_low if versus else None,
                   ci_high=c.ci_high if versus else None, significant=c.significant)


def _variant_result(r: VariantResult) -> VariantResultOut:
    kinds = {k.kind: _kind(k.converted, k.comparison, r.is_control) for k in r.kinds}
    return VariantResultOut(name=r.name, control=r.is_control, exposed=r.exposed,
                            click=kinds[Kind.CLICK], add_to_cart=kinds[Kind.ADD_TO_CART],
                            purchase=kinds[Kind.PURCHASE])


def render_results(r: Results) -> ResultsOut:
    return ResultsOut(experiment=render_experiment(r.experiment), alpha=r.alpha,
                      variants=[_variant_result(v) for v in r.variants])


@router.post("", status_code=201, response_model=ExperimentOut)
async def create(body: ExperimentIn, principal: Principal = Depends(MANAGE),
                 experiments: ExperimentsService = Depends(service)) -> ExperimentOut:
    """Define an experiment, as a draft: variants are model configurations, each served to
    its share of subjects (chosen by a hash of the experiment and subject, so a shopper keeps
    their variant)."""
    variants = [Variant(v.name, v.share, v.config.model_dump(exclude_none=True))
                for v in body.variants]
    return render_experiment(await experiments.create(body.name, body.unit, variants))


@router.get("", response_model=list[ExperimentOut])
async def experiments_(status: Status | None = Query(default=None),
                       principal: Principal = Depends(MANAGE),
                       experiments: ExperimentsService = Depends(service)) -> list[ExperimentOut]:
    """Every experiment, newest first."""
    return [render_experiment(e) for e in await experiments.list(status)]


@router.get("/{experiment_id}", response_model=ExperimentOut)
async def experiment(experiment_id: ExperimentId, principal: Principal = Depends(MANAGE),
                     experiments: ExperimentsService = Depends(service)) -> ExperimentOut:
    return render_experiment(await experiments.get(experiment_id))


@router.post("/{experiment_id}/start", response_model=ExperimentOut)
async def start(experiment_id: ExperimentId, request: Request,
                principal: Principal = Depends(MANAGE),
                experiments: ExperimentsService = Depends(service)) -> ExperimentOut:
    """Start a draft: recommendations are served by its variants from now on (within about a
    second in every API process). If several run, the one started first applies."""
    return render_experiment(await experiments.start(experiment_id, correlation_id(request)))


@router.post("/{experiment_id}/stop", response_model=ExperimentOut)
async def stop(experiment_id: ExperimentId, request: Request,
               principal: Principal = Depends(MANAGE),
               experiments: ExperimentsService = Depends(service)) -> ExperimentOut:
    """Stop a running experiment; its results stay readable."""
    return render_experiment(await experiments.stop(experiment_id, correlation_id(request)))


@router.get("/{experiment_id}/results", response_model=ResultsOut)
async def results(experiment_id: ExperimentId, principal: Principal = Depends(MANAGE),
                  experiments: ExperimentsService = Depends(service)) -> ResultsOut:
    """Per variant: subjects exposed, and for clicks, add-to-carts and purchases after
    exposure the conversion rate, the uplift over the control and a two-sided pooled
    two-proportion z-test with a 95% confidence interval of the difference."""
    return render_results(await experiments.results(experiment_id))
