"""What only the PostgreSQL store has: its config, its namespace checks, reconnecting, and a password that never
shows (the shared behaviour is tested on both backends in test_store.py and test_manager.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

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

    # A connection the server dropped (a restart, an admin) fails one call, and the next call reconnects.
    async with PostgresTrajectoryStore(postgres_url, namespace="checked") as store:
        assert await store.get(traj.trajectory_id) == traj
        async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE pid <> pg_backend_pid() AND datname = current_database()"
            )
        with pytest.raises(SessionError, match="could not count trajectories"):
            await store.count()
        assert await store.count() == 1


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
