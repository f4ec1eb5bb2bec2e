"""Settings of the evaluation: confidence intervals and paired comparisons."""

from __future__ import annotations

from dataclasses import dataclass

from cmrprior.errors import ConfigError
from cmrprior.runs import DEFAULT_LEVEL


@dataclass(frozen=True)
class EvaluationConfig:
    """n_boot: bootstrap resamples over test patients; level: confidence level of every interval."""

    n_boot: int = 1000
    level: float = DEFAULT_LEVEL

    def __post_init__(self) -> None:
        if self.n_boot < 1 or not 0 < self.level < 1:
            raise ConfigError(f"evaluation: n_boot >= 1 and 0 < level < 1, got {self}")
