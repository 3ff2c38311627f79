"""``agentscope sandbox build-image``: the Docker sandbox image, built offline from the host's own files.

No registry is needed: the image's root file system is assembled from this machine's Python 3 (interpreter,
standard library, the shared libraries ``ldd`` says it and its extension modules need) and a small set of
command-line tools (a shell, coreutils, grep, sed, find, tar, gzip...), plus an /etc with a ``sandbox`` user
(uid 1000). It is streamed as a tar archive into ``docker import``. The result is small (~60 MB) and starts fast.

The image carries a label with a hash of its inputs: building again when nothing changed does nothing.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from agentscope.exceptions import SandboxError
from agentscope.sandbox._docker import DEFAULT_IMAGE, docker_client

__all__ = ["BuiltImage", "build_image", "image_files"]

_BUILDER_VERSION = "1"
_HASH_LABEL = "agentscope.sandbox.image.inputs"

TOOLS = [
    "sh",
    "dash",
    "bash",
    "env",
    "cat",
    "ls",
    "cp",
    "mv",
    "rm",
    "mkdir",
    "rmdir",
    "ln",
    "chmod",
    "touch",
    "echo",
    "printf",
    "true",
    "false",
    "sleep",
    "id",
    "whoami",
    "pwd",
    "head",
    "tail",
    "wc",
    "sort",
    "uniq",
    "tr",
    "cut",
    "date",
    "basename",
    "dirname",
    "readlink",
    "realpath",
    "seq",
    "tee",
    "yes",
    "kill",
    "nproc",
    "stat",
    "test",
    "expr",
    "timeout",
    "du",
    "df",
    "mktemp",
    "md5sum",
    "sha256sum",
    "base64",
    "od",
    "diff",
    "cmp",
    "grep",
    "sed",
    "find",
    "xargs",
    "tar",
    "gzip",
    "gunzip",
    "zcat",
    "which",
    "ps",
    "uname",
    "hostname",
    "nice",
    "nohup",
    "setsid",
]
"""Commands the image has besides python3 (each one taken from the host's PATH when present)."""

_SKIP_STDLIB = {
    "test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "pydoc_data",
    "__phello__",
}
_LDD_PATH = re.compile(r"(/\S+)")


@dataclass
class BuiltImage:
    """What :func:`build_image` made."""

    tag: str
    """The image's tag."""
    image_id: str
    """The engine's id of the image."""
    built: bool
    """False when an image with the same inputs already existed and was kept."""
    files: int = 0
    """Files in the root file system."""
    size_bytes: int = 0
    """Uncompressed size of the root file system."""
    notes: list[str] = field(default_factory=list[str])
    """Tools that were asked for but are missing on this host."""


def _which(name: str) -> str | None:
    for directory in ("/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/local/bin"):
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def _ldd(paths: Iterable[str]) -> set[str]:
    """The shared libraries (and the dynamic loader) that ``paths`` load, as absolute host paths."""
    libs: set[str] = set()
    for path in paths:
        try:
            result = subprocess.run(["ldd", path], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            continue
        for line in result.stdout.splitlines():
            if "=>" in line:
                line = line.split("=>", 1)[1]
            match = _LDD_PATH.search(line)
            if match and os.path.exists(match.group(1)):
                libs.add(match.group(1))
    return libs


def _python() -> tuple[str, str, str]:
    """(interpreter, stdlib dir, version) of the host's /usr python3."""
    python = os.path.realpath("/usr/bin/python3")
    if not os.path.isfile(python):
        raise SandboxError(
            "building the sandbox image needs the host's /usr/bin/python3 (apt-get install python3)"
        )
    out = subprocess.run(
        [
            python,
            "-I",
            "-S",
            "-c",
            "import sys,sysconfig;print(sysconfig.get_paths()['stdlib']);print(sys.version)",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.splitlines()
    return python, out[0], out[1].split()[0]


def image_files() -> tuple[dict[str, str], dict[str, str], list[str]]:
    """What goes into the image (blocking): ``{path in image: host path}`` for files, ``{path: target}`` for
    symlinks, and the tools that are missing here."""
    python, stdlib, _version = _python()
    files: dict[str, str] = {}
    links: dict[str, str] = {}
    missing: list[str] = []
    for top in ("bin", "sbin", "lib", "lib64"):
        host = Path("/") / top
        if host.is_symlink():
            links[f"/{top}"] = os.readlink(host)
    executables = [python]
    files["/usr/bin/" + os.path.basename(python)] = python
    links["/usr/bin/python3"] = os.path.basename(python)
    links["/usr/bin/python"] = os.path.basename(python)
    for tool in TOOLS:
        path = _which(tool)
        if path is None:
            missing.append(tool)
            continue
        real = os.path.realpath(path)
        executables.append(real)
        files[real] = real
        target = "/usr/bin/" + tool
        if target != real and target not in files:
            links[target] = real
    for root, dirs, names in os.walk(stdlib):
        rel = os.path.relpath(root, stdlib)
        if rel == ".":
            dirs[:] = sorted(
                d for d in dirs if d not in _SKIP_STDLIB and d not in ("site-packages", "dist-packages")
            )
        else:
            dirs[:] = sorted(dirs)
        for name in names:
            host = os.path.join(root, name)
            if os.path.islink(host):
                target = os.readlink(host)
                if not os.path.isabs(target):
                    links[host] = target
                elif os.path.exists(target):
                    files[host] = os.path.realpath(target)
                continue
            files[host] = host
            if name.endswith(".so"):
                executables.append(host)
    for lib in _ldd(executables):
        real = os.path.realpath(lib)
        files[real] = real
        if lib != real:
            links[lib] = real
    # A path under a symlinked top-level dir (/lib/x86_64-linux-gnu/...) lives in the image under its real dir.
    for top, target in list(links.items()):
        if top.count("/") == 1:
            prefix = top + "/"
            for path in [p for p in files if p.startswith(prefix)]:
                files["/" + target.strip("/") + "/" + path[len(prefix) :]] = files.pop(path)
            for path in [p for p in links if p.startswith(prefix)]:
                links["/" + target.strip("/") + "/" + path[len(prefix) :]] = links.pop(path)
    for conf in ("/etc/ld.so.conf",):
        if os.path.isfile(conf):
            files[conf] = conf
    if os.path.isdir("/etc/ld.so.conf.d"):
        for name in sorted(os.listdir("/etc/ld.so.conf.d")):
            files[f"/etc/ld.so.conf.d/{name}"] = f"/etc/ld.so.conf.d/{name}"
    version_dir = f"/etc/{os.path.basename(python)}"
    if os.path.isdir(version_dir):
        for name in sorted(os.listdir(version_dir)):
            path = os.path.join(version_dir, name)
            if os.path.isfile(path):
                files[path] = path
    return files, links, missing


_ETC = {
    "/etc/passwd": "root:x:0:0:root:/root:/bin/sh\nsandbox:x:1000:1000:sandbox:/work:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    "/etc/group": "root:x:0:\nsandbox:x:1000:\nnogroup:x:65534:\n",
    "/etc/nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\n",
    "/etc/hosts": "127.0.0.1\tlocalhost sandbox\n::1\tlocalhost\n",
    "/etc/os-release": 'NAME="agentscope sandbox"\nID=agentscope-sandbox\n',
}
_DIRS = {
    "/work": 0o755,
    "/tmp": 0o1777,
    "/proc": 0o555,
    "/sys": 0o555,
    "/dev": 0o755,
    "/etc": 0o755,
    "/root": 0o700,
}


def _inputs_hash(files: dict[str, str], links: dict[str, str]) -> str:
    digest = hashlib.sha256(_BUILDER_VERSION.encode())
    for path in sorted(files):
        st = os.stat(files[path])
        digest.update(f"{path}\0{st.st_size}\0{int(st.st_mtime)}\n".encode())
    for path in sorted(links):
        digest.update(f"{path}\0->{links[path]}\n".encode())
    for path in sorted(_ETC):
        digest.update(f"{path}\0{_ETC[path]}\n".encode())
    return digest.hexdigest()[:32]


def _ld_cache(files: dict[str, str], links: dict[str, str]) -> bytes | None:
    """``/etc/ld.so.cache`` for the image, made by ``ldconfig -r`` over a copy of its library dirs."""
    ldconfig = _which("ldconfig") or "/sbin/ldconfig"
    if not os.path.exists(ldconfig):
        return None
    with tempfile.TemporaryDirectory(prefix="agentscope-ldcache-") as tmp:
        for path, host in files.items():
            if "/lib" not in path and not path.startswith("/etc/ld.so"):
                continue
            dest = Path(tmp + path)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not dest.exists():
                os.symlink(host, dest) if not path.startswith("/etc") else shutil.copyfile(host, dest)
        for path, target in links.items():
            dest = Path(tmp + path)
            if "/lib" in path and not dest.exists() and not dest.is_symlink():
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(target, dest)
        (Path(tmp) / "etc").mkdir(exist_ok=True)
        result = subprocess.run([ldconfig, "-r", tmp], capture_output=True, timeout=60)
        cache = Path(tmp) / "etc/ld.so.cache"
        if result.returncode != 0 or not cache.exists():
            return None
        return cache.read_bytes()


def _tar(files: dict[str, str], links: dict[str, str], out: io.BufferedIOBase) -> tuple[int, int]:
    """Write the root file system as a tar stream to ``out``; return (files, bytes)."""
    count = size = 0
    dirs_done: set[str] = set()

    def add_dir(tar: tarfile.TarFile, path: str) -> None:
        parts = path.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            if not sub or sub in dirs_done:
                continue
            dirs_done.add(sub)
            info = tarfile.TarInfo(sub)
            info.type = tarfile.DIRTYPE
            info.mode = _DIRS.get("/" + sub, 0o755)
            info.mtime = 0
            tar.addfile(info)

    def add_bytes(tar: tarfile.TarFile, path: str, data: bytes, mode: int = 0o644) -> None:
        add_dir(tar, os.path.dirname(path))
        info = tarfile.TarInfo(path.lstrip("/"))
        info.size = len(data)
        info.mode = mode
        info.mtime = 0
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(fileobj=out, mode="w|", format=tarfile.GNU_FORMAT) as tar:
        for path in sorted(links):
            if path.count("/") == 1:  # /bin -> usr/bin first, so nothing makes /bin a real directory
                dirs_done.add(path.strip("/"))
                info = tarfile.TarInfo(path.lstrip("/"))
                info.type = tarfile.SYMTYPE
                info.linkname = links[path]
                info.mtime = 0
                tar.addfile(info)
        for path in _DIRS:
            add_dir(tar, path)
        for path in sorted(files):
            host = files[path]
            add_dir(tar, os.path.dirname(path))
            st = os.stat(host)
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size = st.st_size
            info.mode = st.st_mode & 0o755  # never setuid/setgid inside the image
            info.mtime = int(st.st_mtime)
            with open(host, "rb") as f:
                tar.addfile(info, f)
            count += 1
            size += st.st_size
        for path in sorted(links):
            if path.count("/") == 1 or path in files:
                continue
            add_dir(tar, os.path.dirname(path))
            info = tarfile.TarInfo(path.lstrip("/"))
            info.type = tarfile.SYMTYPE
            info.linkname = links[path]
            info.mtime = 0
            tar.addfile(info)
        for path, text in _ETC.items():
            add_bytes(tar, path, text.encode())
        cache = _ld_cache(files, links)
        if cache is not None:
            add_bytes(tar, "/etc/ld.so.cache", cache)
    return count, size


def build_image(tag: str = DEFAULT_IMAGE, *, force: bool = False) -> BuiltImage:
    """Build the sandbox image from this host's files and ``docker import`` it as ``tag`` (blocking).

    Does nothing when an image with the same inputs is already there, unless ``force``.
    Raises SandboxError naming the fix when Docker or the host's Python is missing.
    """
    client = docker_client()
    docker: Any = __import__("docker")
    files, links, missing = image_files()
    inputs = _inputs_hash(files, links)
    if not force:
        try:
            existing = client.images.get(tag)
        except docker.errors.ImageNotFound:
            existing = None
        if existing is not None:
            labels = cast("dict[str, str]", (existing.attrs.get("Config") or {}).get("Labels") or {})
            if labels.get(_HASH_LABEL) == inputs:
                return BuiltImage(tag, cast("str", existing.id), built=False, notes=missing)
    repository, _, version = tag.rpartition(":")
    if not repository or "/" in version:
        repository, version = tag, "latest"
    changes = [
        "USER 1000:1000",
        "WORKDIR /work",
        "ENV PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 HOME=/work",
        f"LABEL {_HASH_LABEL}={inputs} agentscope.sandbox.image=1",
        'CMD ["/bin/sh"]',
    ]
    with tempfile.TemporaryFile(prefix="agentscope-rootfs-", suffix=".tar") as archive:
        count, size = _tar(files, links, cast("io.BufferedIOBase", archive))
        archive.seek(0)
        try:
            client.api.import_image_from_data(
                archive.read(), repository=repository, tag=version, changes=changes
            )
        except docker.errors.APIError as exc:
            raise SandboxError(f"docker import of the sandbox image failed: {exc}") from None
    image = client.images.get(tag)
    return BuiltImage(tag, cast("str", image.id), built=True, files=count, size_bytes=size, notes=missing)
