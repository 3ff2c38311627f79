"""The SQLite helpers every database file of AgentScope (memory, trajectories, traces) is opened with."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from agentscope._sqlite import enable_wal


def test_many_connections_opening_one_new_file_all_get_wal_mode(tmp_path: Path) -> None:
    # Switching a new file to WAL needs its exclusive lock, and SQLite refuses at once (no busy handler) while
    # another connection opens the same new file: several workers opening one fresh store used to fail.
    failures: list[str] = []
    modes: set[str] = set()

    def open_one(path: Path, start: threading.Barrier) -> None:
        start.wait()
        try:
            conn = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
            try:
                conn.execute("PRAGMA user_version").fetchone()
                enable_wal(conn, 10)
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("CREATE TABLE IF NOT EXISTS t (x)")
                conn.execute("COMMIT")
                modes.add(conn.execute("PRAGMA journal_mode").fetchone()[0])
            finally:
                conn.close()
        except sqlite3.Error as exc:
            failures.append(str(exc))

    for i in range(100):
        path = tmp_path / f"new-{i}.db"
        start = threading.Barrier(6)
        threads = [threading.Thread(target=open_one, args=(path, start)) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert failures == []
    assert modes == {"wal"}
