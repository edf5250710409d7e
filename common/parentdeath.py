"""Children that die with their parent: `subprocess.Popen(..., preexec_fn=die_with_parent())`.

On Linux the child asks the kernel for a signal when its parent dies (PR_SET_PDEATHSIG, kept
across exec), so a `rtai up` or a worker supervisor that is SIGKILLed (or OOM-killed) takes its
fleet down instead of leaving it running with parent 1. The parent may die between fork and
prctl: right after setting it the child checks that its parent is still the one that forked it,
and if not, signals itself. Elsewhere (macOS) there is no such call and the hook is None.

The kernel sends the signal when the *thread* that forked the child ends, so spawn from a thread
that lives as long as the process (the main thread).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from collections.abc import Callable

#: prctl option from <linux/prctl.h>.
PR_SET_PDEATHSIG = 1
#: SIGTERM lets a child stop the way it does on Ctrl-C (a worker hands back its batch).
DEFAULT_SIGNAL = signal.SIGTERM

_libc: ctypes.CDLL | None = None
if sys.platform.startswith("linux"):
    # Loaded here, in the parent: the hook runs between fork and exec, where loading is unsafe.
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def die_with_parent(sig: signal.Signals = DEFAULT_SIGNAL) -> Callable[[], None] | None:
    """A preexec_fn that makes the child get `sig` when the calling process dies (None off Linux)."""
    libc = _libc
    if libc is None:
        return None
    parent = os.getpid()
    signum = int(sig)

    def hook() -> None:
        if libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
            return  # nothing to do in a forked child but go on without it
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signum)

    return hook
