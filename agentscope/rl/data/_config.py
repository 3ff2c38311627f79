"""Configuration of the data manager: where trajectories are stored, group sizes, batch size, and each DART
curation policy's switch."""

from __future__ import annotations

from typing import Final, Literal, Self
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agentscope.rl.data._rows import NAMESPACE_PATTERN

__all__ = ["DataConfig"]

_DEFAULT_NAMESPACE: Final = "agentscope"
_DEFAULT_CPUS: Final = 0.5


class DataConfig(BaseModel):
    """How trajectories become training batches. Every curation policy can be switched on or off here."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    store: Literal["sqlite", "postgres"] = "sqlite"
    """Where the run keeps every trajectory. ``sqlite``: the file ``trajectories.db`` in the run directory, for
    one node (writers take turns on the file's lock). ``postgres``: a PostgreSQL database (``url``) that several
    processes or nodes can write at once (``pip install -e '.[postgres]'``). Either way ``rl train`` trains what its
    own rollouts add: trajectories other processes append to the store meanwhile are kept, not queued, until a
    ``--resume`` re-queues every pending one."""
    url: str | None = None
    """``store: postgres`` only: the database, as a libpq URL, ``postgresql://USER@HOST:PORT/DBNAME`` (a unix
    socket: ``postgresql:///DBNAME?host=/run/postgresql``). Never a password: the config is saved with the run
    (``config.yaml``, checkpoints); libpq reads it from ``PGPASSWORD`` or ``~/.pgpass``."""
    namespace: str = _DEFAULT_NAMESPACE
    """``store: postgres`` only: the PostgreSQL schema that holds this run's tables (lower-case letters, digits and
    ``_``). One run per namespace: every process writing the run names the same one, and a new run refuses a
    namespace that holds trajectories already."""
    placement: Literal["inprocess", "ray"] = "inprocess"
    """Where the data manager runs. ``inprocess``: in the training process. ``ray``: in a Ray actor of its own
    (``cpus`` reserved), which opens the store itself (``trajectories.db`` in the run directory, on the driver's
    node; or PostgreSQL at ``url``); the training process sends it each finished trajectory as a Ray object and
    takes batches from it. Same trajectories and batches for the same seed. If the actor dies, the run stops with
    an error saying so: nothing stored is lost, and ``--resume`` goes on from the last checkpoint."""
    cpus: float = Field(default=_DEFAULT_CPUS, ge=0.0)
    """``placement: ray`` only (another value without it is an error): Ray's CPU reservation for the data manager's
    actor (it mostly waits on the store)."""
    group_size: int = Field(default=4, ge=1)
    """Rollouts per task in one group (verl's ``rollout.n``) when adaptive rollouts are off, and for tasks not
    seen yet when they are on. Advantages are computed within a group."""
    batch_groups: int = Field(default=4, ge=1)
    """Groups in one training batch."""
    max_staleness: int | None = Field(default=2, ge=0)
    """Staleness bound: a trajectory whose oldest token came from a policy more than this many versions behind the
    trainer's is dropped (status ``dropped_stale``) when a batch is formed. ``None`` switches the bound off."""
    use_once: bool = True
    """Train each trajectory once: a batch's trajectories are marked ``trained_at_step`` and leave the queue.
    Off: a trained group goes back to the end of the queue and is trained again, until the staleness bound drops
    it (off-policy reuse); ``trained_at_step`` then records its latest step. A resume re-queues only trajectories
    never trained."""
    drop_zero_variance: bool = True
    """Drop groups whose rewards are all equal (status ``dropped_zero_variance``): their group-relative advantage is
    zero, so they only cost compute. A group of one always has zero variance: switch this off with
    ``group_size: 1``."""
    success_replay: bool = True
    """When every member of a group failed, replace one failure with a copy of the task's most recent stored
    success (DART's success replay), so hard tasks still give a learning signal. The replaced failure is marked
    ``dropped_zero_variance``; the copy is a new stored trajectory that references the same token blob. Only a
    success within ``max_staleness`` of the trainer's policy is copied, and the copy obeys the staleness bound
    like any trajectory (it keeps the policy versions that generated it). Copies are counted apart from fresh
    episodes (``data/trained_replayed``; ``data/trained_tokens`` excludes them)."""
    max_replays_per_task: int | None = Field(default=4, ge=1)
    """Success replay: most copies of one task's successes that are trained or waiting to be, over the run
    (counted in the store, so a resume keeps the count; a copy dropped as stale frees its place). Past it the
    task's all-failure groups are dropped as zero-variance, so a few old successes cannot dominate what the
    policy learns on a task it keeps failing. ``None``: no cap (the staleness bound still applies)."""
    adaptive_rollouts: bool = False
    """Size each task's group by its observed success rate: ``max_rollouts`` for tasks never solved, falling
    linearly to ``min_rollouts`` for tasks always solved (see :meth:`DataManager.group_size_for`)."""
    min_rollouts: int = Field(default=2, ge=1)
    """Smallest group an adaptive task gets (tasks it always solves)."""
    max_rollouts: int = Field(default=8, ge=1)
    """Largest group an adaptive task gets (tasks it never solves)."""
    adaptive_window: int = Field(default=32, ge=1)
    """Recent episodes per task that its success rate is measured over (so it follows the improving policy)."""
    adaptive_min_episodes: int = Field(default=4, ge=1)
    """Episodes a task needs before its success rate sizes its groups (until then: ``group_size``)."""
    high_entropy_steps: float | None = Field(default=None, gt=0.0, le=1.0)
    """High-entropy step selection: keep only this fraction of a batch's turns, those with the highest entropy
    (estimated as the mean negative log-prob of the turn's sampled tokens); the others get loss mask 0.
    ``None`` switches it off."""

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        try:
            parts = urlsplit(url)
        except (
            ValueError
        ):  # e.g. an unclosed [IPv6] host: say so without echoing the URL (it may hold a password)
            raise ValueError("the URL does not parse (check its host)") from None
        if parts.scheme not in ("postgresql", "postgres"):
            raise ValueError("expected a PostgreSQL URL, postgresql://USER@HOST:PORT/DBNAME")
        if parts.password is not None or "password" in parse_qs(parts.query):
            raise ValueError(
                "holds a password, and the config is saved with the run: remove it from the URL and give it in "
                "PGPASSWORD or ~/.pgpass"
            )
        return url

    @field_validator("namespace")
    @classmethod
    def _check_namespace(cls, namespace: str) -> str:
        if not NAMESPACE_PATTERN.fullmatch(namespace):
            raise ValueError(
                f"{namespace!r} is not a plain PostgreSQL schema name (lower-case letters, digits and _, at most 63)"
            )
        return namespace

    @model_validator(mode="after")
    def _check_store(self) -> Self:
        if self.store == "postgres" and self.url is None:
            raise ValueError("url: required with store: postgres (postgresql://USER@HOST:PORT/DBNAME)")
        if self.store == "sqlite" and self.url is not None:
            raise ValueError(
                "url: only for store: postgres (store: sqlite keeps trajectories.db in the run dir)"
            )
        if self.store == "sqlite" and self.namespace != _DEFAULT_NAMESPACE:
            raise ValueError("namespace: only for store: postgres")
        return self

    @model_validator(mode="after")
    def _check_placement(self) -> Self:
        # By value, not by the fields set: a saved config (every field written out) must load again.
        if self.placement == "inprocess" and self.cpus != _DEFAULT_CPUS:
            raise ValueError(
                f"cpus: {self.cpus:g} is used by placement ray only (the data manager actor's reservation): set "
                "data.placement=ray, or remove it"
            )
        return self

    @model_validator(mode="after")
    def _check_rollout_range(self) -> Self:
        if self.min_rollouts > self.max_rollouts:
            raise ValueError(
                f"min_rollouts ({self.min_rollouts}) must not exceed max_rollouts ({self.max_rollouts})"
            )
        return self
