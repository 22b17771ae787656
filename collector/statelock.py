"""One collector per state folder: an exclusive lock held for the life of the process.

Two collectors on one folder would both read every file and overwrite each other's
checkpoints, each moving them past records only the other had delivered. flock(2) is
released by the kernel when the process ends, however it ends (kill -9 too), so a crash
never leaves a stale lock behind to clean by hand.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

LOCK_NAME = "lock"


class StateDirLocked(Exception):
    """Another process holds the folder; the message names it."""


def lock_state_dir(state_dir: str) -> int:
    """Takes the folder's lock or raises StateDirLocked (OSError when the folder is unusable).

    Returns the descriptor that holds the lock: it must stay open while the process runs.
    """
    os.makedirs(state_dir, exist_ok=True)
    fd = os.open(os.path.join(state_dir, LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        who = f" (pid {holder} in its namespace)" if holder.isdigit() else ""
        raise StateDirLocked(f"{state_dir} is in use by another collector{who}") from None
    except OSError:
        os.close(fd)
        raise
    # For the operator who wonders who holds it; the lock, not this text, is what counts.
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
