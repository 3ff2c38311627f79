"""``agentscope sandbox build-image``: the offline-built Docker image (built once by the conftest or the set-up
hook; building again with the same inputs is a no-op)."""

from __future__ import annotations

from collections.abc import Callable

from click.testing import Result

from agentscope.sandbox._image import image_files


def test_build_image_is_idempotent(docker_works: None, cli: Callable[..., Result]) -> None:
    result = cli("sandbox", "build-image")
    assert result.exit_code == 0, result.output
    assert "up to date" in result.output


def test_image_has_python_and_its_libraries() -> None:
    files, links, _missing = image_files()
    assert any(path.startswith("/usr/bin/python3") for path in files)
    assert links["/usr/bin/python3"].startswith("python3")
    assert any("/lib-dynload/" in path for path in files)
    assert any(path.endswith(("libc.so.6",)) for path in files)
    assert not any("/test/" in path for path in files), "the stdlib's test suite stays out"
