"""What only the PostgreSQL store has: its config, its namespace checks, reconnecting, and a password that never
shows (the shared behaviour is tested on both backends in test_store.py and test_manager.py)."""

from __future__ import annotations

from collections.abc import Callable, Generator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import pytest

from agentscope.exceptions import ConfigError, SessionError
from agentscope.rl import Trajectory
from agentscope.rl._config import load_config
from agentscope.rl.data import DataConfig, PostgresTrajectoryStore, TrajectoryStore, open_store
from agentscope.rl.data._postgres import redact_url

MakeTraj = Callable[..., Trajectory]


def test_config_selects_the_store_and_checks_it_at_load() -> None:
    assert DataConfig().store == "sqlite"
    pg = DataConfig(store="postgres", url="postgresql://trainer@127.0.0.1:5432/runs", namespace="run_7")
    assert (pg.url, pg.namespace) == ("postgresql://trainer@127.0.0.1:5432/runs", "run_7")

    cases = {
        "data.store=mysql": "data.store",
        "data.store=postgres": "url: required with store: postgres",
        "data.url=postgresql://u@h/db": "url: only for store: postgres",
        "data.namespace=run_1": "namespace: only for store: postgres",
    }
    for override, expected in cases.items():
        with pytest.raises(ConfigError, match=expected):
            load_config(None, [override])
    for bad in ("Run-1", "1run", "a" * 64, "x;drop"):
        with pytest.raises(ConfigError, match=r"data\.namespace: .*not a plain PostgreSQL schema name"):
            load_config(
                None, ["data.store=postgres", "data.url=postgresql://u@h/db", f"data.namespace={bad}"]
            )
    with pytest.raises(ConfigError, match=r"data\.url: expected a PostgreSQL URL"):
        load_config(None, ["data.store=postgres", "data.url=mysql://u@h/db"])


@pytest.mark.parametrize(
    "url", ["postgresql://u:s3cr3t@127.0.0.1/db", "postgresql://u@127.0.0.1/db?password=s3cr3t"]
)
def test_a_password_in_the_config_is_refused_without_showing_it(url: str) -> None:
    with pytest.raises(ConfigError, match=r"data\.url: holds a password") as caught:
        load_config(None, ["data.store=postgres", f"data.url={url}"])
    assert "s3cr3t" not in str(caught.value)
    assert "PGPASSWORD" in str(caught.value)


def test_open_store_picks_the_backend(tmp_path: Path) -> None:
    sqlite = open_store(DataConfig(), tmp_path)
    assert isinstance(sqlite, TrajectoryStore)
    assert sqlite.path == tmp_path / "trajectories.db"
    pg = open_store(DataConfig(store="postgres", url="postgresql://u@127.0.0.1/db", namespace="r1"), tmp_path)
    assert isinstance(pg, PostgresTrajectoryStore)
    assert (pg.url, pg.namespace) == ("postgresql://u@127.0.0.1/db", "r1")


async def test_the_password_never_shows_in_errors_or_repr() -> None:
    assert "s3cr3t" not in redact_url("postgresql://u:s3cr3t@127.0.0.1:1/db")
    assert "s3cr3t" not in redact_url("host=127.0.0.1 password=s3cr3t")
    store = PostgresTrajectoryStore("postgresql://u:s3cr3t@127.0.0.1:1/db?connect_timeout=5", namespace="n")
    assert "s3cr3t" not in repr(store)
    assert "s3cr3t" not in store.url
    with pytest.raises(SessionError, match="could not count trajectories") as caught:
        await store.count()  # nothing listens on port 1
    assert "s3cr3t" not in str(caught.value)
    assert "127.0.0.1" in str(caught.value)
    with pytest.raises(ValueError, match="namespace 'Bad'"):
        PostgresTrajectoryStore("postgresql://u@127.0.0.1/db", namespace="Bad")


async def test_namespace_checks_and_reconnect(postgres_url: str, make_traj: MakeTraj) -> None:
    import psycopg

    traj = make_traj()
    async with PostgresTrajectoryStore(postgres_url, namespace="checked") as store:
        await store.add(traj)
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        await conn.execute("CREATE SCHEMA foreign_app")
        await conn.execute("CREATE TABLE foreign_app.trajectories (x INTEGER)")
        await conn.execute("UPDATE checked.store_info SET version = 99")
    with pytest.raises(SessionError, match=r"tables of some other program \(trajectories\)"):
        await PostgresTrajectoryStore(postgres_url, namespace="foreign_app").count()
    with pytest.raises(SessionError, match="schema version 99, newer"):
        await PostgresTrajectoryStore(postgres_url, namespace="checked").count()
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        await conn.execute("UPDATE checked.store_info SET version = 1")

    # A connection the server dropped (a restart, failover, an admin) is replaced and the call redone: every
    # method goes on, and nothing is stored twice.
    async with PostgresTrajectoryStore(postgres_url, namespace="checked") as store:
        assert await store.get(traj.trajectory_id) == traj
        second, third = make_traj(group_id="g1"), make_traj(group_id="g2")
        calls = {
            "count": lambda: store.count(),
            "add": lambda: store.add(second),
            "add_many": lambda: store.add_many([third]),
            "mark": lambda: store.mark([second.trajectory_id], status="dropped_stale"),
            "pending": lambda: store.pending(),
            "claim": lambda: store.claim(5, step=1),
            "rollback": lambda: store.rollback(0),
        }
        results: dict[str, object] = {}
        for name, call in calls.items():
            await terminate_other_backends(postgres_url)
            results[name] = await call()
        assert results["count"] == 1
        assert results["mark"] == 1
        assert [t.trajectory_id for t in cast(list[Trajectory], results["claim"])] == [
            traj.trajectory_id,
            third.trajectory_id,
        ]
        assert await store.count() == 3  # each once
        assert await store.count(trained=True) == 0  # rolled back to step 0


async def terminate_other_backends(url: str) -> None:
    """What a server restart does to the store's connection: the server ends it (found only on its next use)."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
            " WHERE pid <> pg_backend_pid() AND datname = current_database() AND backend_type = 'client backend'"
        )


@pytest.fixture
def lose_next_commit_ack(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Arms a fault: the next transaction the store commits lands, then its connection breaks before the store
    hears of it (the server ended the connection right after the commit)."""
    import psycopg

    armed: list[bool] = []
    original = psycopg.Connection.transaction

    @contextmanager
    def transaction(self: psycopg.Connection[Any], *args: Any, **kwargs: Any) -> Generator[Any]:
        with original(self, *args, **kwargs) as tx:
            yield tx
        if armed and armed.pop():
            with psycopg.connect(postgres_url, autocommit=True) as other:
                other.execute("SELECT pg_terminate_backend(%s, 5000)", (self.info.backend_pid,))
            self.execute("SELECT 1")  # the store's next read from the connection: it is broken

    monkeypatch.setattr(psycopg.Connection, "transaction", transaction)
    return lambda: armed.append(True)


async def test_a_commit_whose_acknowledgement_was_lost_is_not_redone(
    postgres_url: str, make_traj: MakeTraj, lose_next_commit_ack: Callable[[], None]
) -> None:
    trajs = [make_traj(group_id=f"g{i}", reward=float(i)) for i in range(3)]
    async with PostgresTrajectoryStore(postgres_url, namespace="lost_ack") as store:
        lose_next_commit_ack()
        await store.add_many(trajs[:2])  # stored by the first attempt: the retry finds them, the same
        assert await store.get_many([t.trajectory_id for t in trajs[:2]]) == trajs[:2]
        await store.add(trajs[2])

        lose_next_commit_ack()
        claimed = await store.claim(2, step=1)  # claimed by the first attempt: the retry returns those rows
        assert [t.trajectory_id for t in claimed] == [t.trajectory_id for t in trajs[:2]]
        assert [t.trajectory_id for t in await store.claim(5, step=2)] == [trajs[2].trajectory_id]
        assert await store.count() == 3

        # An id stored before with other content stays a conflict, after a reconnect too.
        clash = trajs[0].model_copy(update={"reward": 9.0})
        await terminate_other_backends(postgres_url)
        with pytest.raises(ValueError, match="stored already"):
            await store.add(clash)
        assert (await store.get(trajs[0].trajectory_id)).reward == 0.0


def test_one_namespace_pattern_for_the_config_and_the_store() -> None:
    from agentscope.rl.data import _config, _postgres
    from agentscope.rl.data._rows import NAMESPACE_PATTERN

    assert _config.NAMESPACE_PATTERN is _postgres.NAMESPACE_PATTERN is NAMESPACE_PATTERN


def test_a_resume_never_moves_the_store() -> None:
    from agentscope.rl._resume import check_config

    saved = load_config(None).model_dump(mode="json")
    pg = load_config(
        None, ["data.store=postgres", "data.url=postgresql://u@127.0.0.1/db", "data.namespace=run_1"]
    )
    with pytest.raises(
        ConfigError, match=r"cannot move them: data\.namespace: .*data\.store: 'sqlite' -> 'postgres'"
    ):
        check_config(saved, pg, allow=True, source="the checkpoint")
    elsewhere = load_config(
        None, ["data.store=postgres", "data.url=postgresql://u@10.0.0.9/db", "data.namespace=run_1"]
    )
    assert check_config(pg.model_dump(mode="json"), elsewhere, allow=True, source="the checkpoint") == {
        "data.url": ("postgresql://u@127.0.0.1/db", "postgresql://u@10.0.0.9/db")
    }


async def test_a_connection_string_that_does_not_parse_is_not_echoed() -> None:
    store = PostgresTrajectoryStore("host=127.0.0.1 password=s3cr3t port", namespace="n")
    assert "s3cr3t" not in repr(store)
    with pytest.raises(SessionError, match="does not parse") as caught:
        await store.count()
    assert "s3cr3t" not in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__
