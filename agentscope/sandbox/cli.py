"""``agentscope sandbox``: build the Docker sandbox image, register gVisor with dockerd.

The command group of this package; :mod:`agentscope.cli` mounts :data:`sandbox_app` as ``agentscope sandbox``.
Each command imports what it needs when it runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agentscope._commands import command_group

__all__ = ["sandbox_app"]

sandbox_app = command_group("sandbox", "Sandboxes for model-written code: build the Docker image.")


@sandbox_app.command("build-image")
def sandbox_build_image(
    tag: Annotated[
        str, typer.Option("--tag", help="Tag of the image to build.")
    ] = "agentscope-sandbox:latest",
    force: Annotated[
        bool, typer.Option("--force", help="Build even when an up-to-date image exists.")
    ] = False,
) -> None:
    """Build the Docker sandbox image offline from this host's Python and tools (docker import; no registry)."""
    from agentscope.exceptions import SandboxError
    from agentscope.sandbox._image import build_image

    try:
        built = build_image(tag, force=force)
    except SandboxError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if built.built:
        typer.echo(
            f"built {built.tag} ({built.image_id[:19]}): {built.files} files, {built.size_bytes >> 20} MiB"
        )
    else:
        typer.echo(f"{built.tag} is up to date ({built.image_id[:19]})")
    if built.notes:
        typer.echo(f"note: not on this host, so not in the image: {', '.join(built.notes)}", err=True)


@sandbox_app.command("register-gvisor")
def sandbox_register_gvisor(
    runsc: Annotated[
        str | None, typer.Option("--runsc", help="Path of runsc (default: found on PATH).")
    ] = None,
    daemon_json: Annotated[Path, typer.Option("--daemon-json", help="dockerd's configuration file.")] = Path(
        "/etc/docker/daemon.json"
    ),
) -> None:
    """Register gVisor's runsc with dockerd as the "runsc" runtime, with --network=none (sandboxes have no
    network; current kernels refuse runsc's network set-up). Updates a registration that lacks the flag; prints
    "changed" (reload dockerd: kill -HUP its pid) or "unchanged"."""
    import shutil

    from agentscope.sandbox._gvisor import register_gvisor_runtime

    path = runsc or shutil.which("runsc")
    if path is None:
        typer.echo("error: runsc not found (apt-get install runsc)", err=True)
        raise typer.Exit(1)
    try:
        changed = register_gvisor_runtime(path, daemon_json=daemon_json)
    except (OSError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo("changed" if changed else "unchanged")
