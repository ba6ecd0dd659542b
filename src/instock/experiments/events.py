"""Events the experiments context publishes."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from instock.platform.bus.envelope import DomainEvent


class VariantData(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    share: float = Field(description="the share of subjects assigned to it, in (0, 1]")
    config: dict[str, Any] = Field(description="the model configuration: optional `model` "
                                               "and `weights`")


class ExperimentEvent(DomainEvent):
    """An event about one experiment."""

    experiment_id: str
    name: str

    @property
    def subject(self) -> str:
        """The experiment's id."""
        return self.experiment_id


class ExperimentStarted(ExperimentEvent):
    """An experiment began: from now on recommendations are served by its variants."""

    type: ClassVar[str] = "experiment.started.v1"
    unit: str = Field(description="customer or session: what subjects are assigned by")
    control: str = Field(description="the name of the control variant")
    variants: list[VariantData]
    started_at: datetime


class ExperimentStopped(ExperimentEvent):
    """An experiment ended: no one is assigned any more, and conversions after now do not
    count; its results stay readable."""

    type: ClassVar[str] = "experiment.stopped.v1"
    started_at: datetime
    stopped_at: datetime
