"""What a study exports (`export:` in the study config)."""

from __future__ import annotations

from dataclasses import dataclass

from cmrprior.errors import ConfigError

# The bundles a study can export today, by their folder name under RUN/models/.
EXPORTABLE = ("anatomy",)


@dataclass(frozen=True)
class ExportConfig:
    """enabled: write `RUN/models/<name>/` for every model family the study fits on all its patients.
    recommend: the bundle named in `RUN/models/recommended.json`, fixed here before any result is seen (never
    chosen on the results of the `--test` cohort)."""

    enabled: bool = True
    recommend: str = "anatomy"

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ConfigError(f"export.enabled must be true or false, got {self.enabled!r}")
        if self.recommend not in EXPORTABLE:
            raise ConfigError(f"export.recommend must be one of {list(EXPORTABLE)}, got {self.recommend!r}")
