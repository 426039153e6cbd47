"""Limits applied inside a new environment, between ``fork()`` and the handler's import.

Called by the template process only (in the forked child, or in itself at startup). What
each limit does, and where it is weaker than Lambda's micro-VM:

- **memory** (``memory_size``): ``RLIMIT_AS`` set to ``memory_size`` MB. An allocation past
  it fails, which Python raises as MemoryError; the worker reports ``Runtime.OutOfMemory``
  and exits, so the environment is replaced. The limit is on *address space*, not resident
  memory: a runtime that reserves much more than it touches (a JVM, V8, many threads with
  8 MB stacks) fails earlier than on AWS. glibc's per-thread malloc arenas (64 MB of
  address space each) are turned off in the template with ``mallopt(M_ARENA_MAX, 1)`` so
  that threads alone do not exhaust the limit.
- **/tmp** (``ephemeral_storage``): each environment gets its own directory, named by
  ``TMPDIR`` and :data:`tempfile.tempdir`. Where the template may mount (root, or
  ``CAP_SYS_ADMIN``), the worker enters a private mount namespace and mounts a ``tmpfs``
  of ``ephemeral_storage`` MB on that directory: writing past it fails with ENOSPC, and the
  mount disappears with the environment's last process. Elsewhere ``RLIMIT_FSIZE`` caps
  each *file* at ``ephemeral_storage`` MB (EFBIG) but not the directory's total — the
  honest limit of an unprivileged process. Either way ``/tmp`` itself is the host's: code
  that hard-codes ``/tmp/...`` instead of using ``tempfile``/``TMPDIR`` is not isolated.
- **file descriptors**: ``RLIMIT_NOFILE`` 1024, as on AWS.
- **lifetime**: ``PR_SET_PDEATHSIG`` kills a worker whose template dies, and each
  environment is its own process group, so a kill reaches the processes it started; the
  template, their subreaper, kills what leaves the group (see its module docstring). A
  process whose parent still runs and that left the group is not reached until then.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import signal

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_M_ARENA_MAX = -8
_CLONE_NEWNS = 0x00020000
_MS_NOSUID = 2
_MS_NODEV = 4
_MS_REC = 0x4000
_MS_PRIVATE = 1 << 18

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
MB = 1024 * 1024


def prepare_template() -> None:
    """In the template at startup: adopt orphans (so a handler's stray child is reaped) and
    keep malloc from reserving an arena per thread in every environment."""
    _libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    _libc.mallopt(_M_ARENA_MAX, 1)


def die_with_parent() -> None:
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def can_mount() -> bool:
    """Whether environments can get a private tmpfs (decided once, in the template)."""
    pid = os.fork()
    if pid == 0:  # probe in a child: unsharing is one-way
        code = 1
        try:
            _private_mounts()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def limit_storage(tmp_dir: str, storage_mb: int, *, tmpfs: bool) -> None:
    """Give this process (and what it starts) a /tmp of ``storage_mb`` MB at ``tmp_dir``."""
    if tmpfs:
        _private_mounts()
        options = f"size={storage_mb}m,mode=0700".encode()
        if _libc.mount(b"tmpfs", tmp_dir.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, options):
            errno = ctypes.get_errno()
            raise OSError(errno, f"mount tmpfs on {tmp_dir}: {os.strerror(errno)}")
    else:
        size = storage_mb * MB
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    # Python ignores SIGXFSZ, so a write past RLIMIT_FSIZE fails with EFBIG; keep it so for
    # programs exec'd from here, which would otherwise be killed by the signal.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def limit_memory(memory_mb: int) -> None:
    size = memory_mb * MB
    resource.setrlimit(resource.RLIMIT_AS, (size, size))


def limit_files(count: int = 1024) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = count if hard == resource.RLIM_INFINITY else min(count, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))


def flush_c_stdio() -> None:
    """Flush C-level stdio buffers (output of C extensions) before a response is sent."""
    _libc.fflush(None)


def _private_mounts() -> None:
    if _libc.unshare(_CLONE_NEWNS):
        errno = ctypes.get_errno()
        raise OSError(errno, f"unshare(CLONE_NEWNS): {os.strerror(errno)}")
    # without this, a mount would propagate back into the host's namespace
    if _libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None):
        errno = ctypes.get_errno()
        raise OSError(errno, f"make / private: {os.strerror(errno)}")
