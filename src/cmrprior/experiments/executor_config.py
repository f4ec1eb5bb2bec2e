"""Where the study's pieces run (`executor:` in a study config): this process, a pool of local processes, or
SLURM jobs (`cmrprior.experiments.executors`). How a study is run never changes its numbers, so these
settings are left out of the config digest that ties a run folder to its config (`StudyConfig.digest`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cmrprior.errors import ConfigError

EXECUTORS: tuple[str, ...] = ("local", "slurm")
# The resource classes of the pieces (`experiments.pieces.Piece.resources`), one `Resources` each below.
RESOURCE_CLASSES: tuple[str, ...] = ("prepare", "pretrain", "cell", "saliency", "report")


@dataclass(frozen=True)
class Resources:
    """What one SLURM job of a kind of piece asks for."""

    gpus: int = 0
    cpus: int = 4  # also the job's torch threads
    mem_gb: int = 16
    time_min: int = 120  # wall-time limit; a job that reaches it is requeued and resumes (up to `max_requeues`)

    def __post_init__(self) -> None:
        if self.gpus < 0 or self.cpus < 1 or self.mem_gb < 1 or self.time_min < 1:
            raise ConfigError(f"executor.slurm resources need gpus >= 0, cpus >= 1, mem_gb >= 1, time_min >= 1, "
                              f"got {self}")


def _job(gpus: int, time_min: int) -> Resources:
    return Resources(gpus=gpus, cpus=8, mem_gb=32, time_min=time_min)


@dataclass(frozen=True)
class SlurmConfig:
    """SLURM settings: where jobs go, how many run at once, and each kind of piece's resources."""

    partition: str | None = None  # None: the cluster's default partition
    account: str | None = None
    qos: str | None = None
    max_running: int = 32  # concurrency cap of each job array (`--array=...%N`)
    max_requeues: int = 3  # requeues after a time limit or pre-emption before a piece counts as failed
    poll_s: float = 10.0  # how often the driver looks at its jobs
    setup: tuple[str, ...] = ()  # shell lines run before each job (e.g. `module load cuda`)
    # Only SimCLR pre-training runs on a GPU today (`pretrain.device`); the other stages use the CPU, so their
    # jobs ask for none.
    prepare: Resources = field(default_factory=lambda: _job(0, 240))  # locate + segment the cohort
    pretrain: Resources = field(default_factory=lambda: _job(1, 720))  # one SimCLR or Seg-teacher run
    cell: Resources = field(default_factory=lambda: _job(0, 720))  # one diagnosis model: CV search, fit, score
    saliency: Resources = field(default_factory=lambda: _job(0, 240))
    report: Resources = field(default_factory=lambda: Resources(gpus=0, cpus=4, mem_gb=16, time_min=120))

    def __post_init__(self) -> None:
        if self.max_running < 1 or self.max_requeues < 0 or self.poll_s <= 0:
            raise ConfigError(f"executor.slurm needs max_running >= 1, max_requeues >= 0, poll_s > 0; got "
                              f"{self.max_running}, {self.max_requeues}, {self.poll_s}")

    def resources(self, kind: str) -> Resources:
        """The resources of a resource class (`RESOURCE_CLASSES`)."""
        if kind not in RESOURCE_CLASSES:
            raise ConfigError(f"no resource class {kind!r}; expected one of {list(RESOURCE_CLASSES)}")
        return getattr(self, kind)


@dataclass(frozen=True)
class ExecutorConfig:
    """`kind`: `local` (this machine) or `slurm`. `workers`: local pieces run at once, each in its own
    process; 1 (the default) runs the whole study in this process, as `cmrprior study` always did."""

    kind: str = "local"
    workers: int = 1
    slurm: SlurmConfig = field(default_factory=SlurmConfig)

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise ConfigError(f"executor.kind must be one of {list(EXECUTORS)}, got {self.kind!r}")
        if self.workers < 1:
            raise ConfigError(f"executor.workers must be >= 1, got {self.workers}")

    @property
    def by_pieces(self) -> bool:
        """Whether the study runs as a graph of pieces (`experiments.executors`) rather than in one call."""
        return self.kind != "local" or self.workers > 1
