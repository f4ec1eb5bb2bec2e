"""What a study exports (`export:` in the study config)."""

from __future__ import annotations

from dataclasses import dataclass

from cmrprior.errors import ConfigError

# Bundles shipped with the package (folders under weights/bundles/), and the one `diagnose` applies by default.
SHIPPED = ("acdc",)
DEFAULT_BUNDLE = "acdc"

# The bundles a study can export today, by their folder name under RUN/models/ (the primary analysis'
# names, `StudyConfig.primary`).
EXPORTABLE = ("anatomy",)


@dataclass(frozen=True)
class ExportConfig:
    """enabled: write `RUN/models/<name>/` for every model family the study fits on all its patients. The
    bundle `RUN/models/recommended.json` names is the study's primary analysis (`primary:` in the study
    config, fixed before any result), never one chosen on results."""

    enabled: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ConfigError(f"export.enabled must be true or false, got {self.enabled!r}")
