"""The system-call filter of every sandbox, built with libseccomp (``pyseccomp``, in the ``sandbox`` extra).

It allows everything except what sandboxed code has no business doing and what widens the kernel's attack
surface, which it refuses with ``EPERM``: the calls Docker's default profile refuses to a container without
capabilities, and also ``ptrace`` and its relatives (which that profile allows), ``io_uring`` and the new mount
API. ``clone3`` gets ``ENOSYS``, as under Docker: its flags are out of a filter's reach, and C libraries then fall
back to ``clone``, whose namespace flags the filter can see. The program is compiled once per process for this
machine's architecture (and its 32-bit companions) and exported as classic BPF: bubblewrap loads it with
``--seccomp FD``; in a Docker container the guest loads it on itself at start, on top of Docker's own profile.
"""

from __future__ import annotations

import errno
import importlib
import os
from functools import cache
from typing import Final

from agentscope.exceptions import SandboxError

__all__ = ["DENIED_SYSCALLS", "ENOSYS_SYSCALLS", "NAMESPACE_FLAGS", "seccomp_program"]

DENIED_SYSCALLS: Final[tuple[str, ...]] = (
    # Looking into or steering other processes (the guest is one of them).
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "pidfd_getfd",
    "kcmp",
    # Mounting, namespaces, root changes.
    "mount",
    "umount",
    "umount2",
    "pivot_root",
    "chroot",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
    "unshare",
    "setns",
    # Kernel keyrings (not namespaced).
    "keyctl",
    "add_key",
    "request_key",
    # Large kernel attack surface that sandboxed code does not need.
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "fanotify_init",
    "open_by_handle_at",
    "lookup_dcookie",
    "uselib",
    "_sysctl",
    # The machine itself: modules, kexec, reboot, swap, clock, accounting, quotas, I/O ports.
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "get_kernel_syms",
    "query_module",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "quotactl_fd",
    "settimeofday",
    "stime",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "syslog",
    "vhangup",
    "nfsservctl",
    "iopl",
    "ioperm",
    "vm86",
    "vm86old",
)
"""Refused with ``EPERM`` whatever their arguments."""

ENOSYS_SYSCALLS: Final[tuple[str, ...]] = ("clone3",)
"""Refused with ``ENOSYS``, so that C libraries fall back to a call the filter can inspect."""

NAMESPACE_FLAGS: Final[dict[str, int]] = {
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}
"""``clone`` with any of these flags (a new namespace) is refused with ``EPERM``; plain forks and threads pass."""


def _import_pyseccomp() -> None:
    try:
        importlib.import_module("pyseccomp")
    except ImportError:
        raise SandboxError(
            "sandboxes filter dangerous system calls with libseccomp, whose Python binding is missing: "
            "pip install -e '.[sandbox]' (it brings pyseccomp)"
        ) from None
    except RuntimeError as exc:  # pyseccomp raises it when libseccomp.so.2 is not installed
        raise SandboxError(
            f"sandboxes filter dangerous system calls with libseccomp, which is not installed ({exc}): "
            "apt-get install libseccomp2 (dnf install libseccomp)"
        ) from None


@cache
def seccomp_program() -> bytes:
    """The filter as a classic BPF program for ``seccomp(2)`` / ``bwrap --seccomp`` (compiled once; blocking).

    Raises :class:`SandboxError` naming the fix when libseccomp or its Python binding is missing.
    """
    _import_pyseccomp()
    import pyseccomp as seccomp

    syscall_filter = seccomp.SyscallFilter(seccomp.ALLOW)

    def refuse(name: str, errno_value: int, *args: seccomp.Arg) -> None:
        if seccomp.resolve_syscall(seccomp.Arch.NATIVE, name) == -1:
            return  # a call this libseccomp does not know at all (it is older than the call)
        syscall_filter.add_rule(seccomp.ERRNO(errno_value), name, *args)

    companions = {
        seccomp.Arch.X86_64: (seccomp.Arch.X86, seccomp.Arch.X32),
        seccomp.Arch.AARCH64: (seccomp.Arch.ARM,),
    }.get(seccomp.system_arch(), ())
    for arch in companions:  # 32-bit programs get the same rules (calls an architecture lacks are skipped)
        syscall_filter.add_arch(arch)
    for name in DENIED_SYSCALLS:
        refuse(name, errno.EPERM)
    for name in ENOSYS_SYSCALLS:
        refuse(name, errno.ENOSYS)
    for flag in NAMESPACE_FLAGS.values():
        refuse("clone", errno.EPERM, seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
    fd = os.memfd_create("agentscope-seccomp")
    try:
        syscall_filter.export_bpf(_Fd(fd))
        program = os.pread(fd, os.lseek(fd, 0, os.SEEK_END), 0)
    finally:
        os.close(fd)
    if not program or len(program) % 8:
        raise SandboxError(f"libseccomp exported a malformed filter ({len(program)} bytes)")
    return program


class _Fd:
    """What ``export_bpf`` wants: something with a ``fileno``."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd
