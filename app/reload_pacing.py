"""A brands reload that gives way to the requests it shares the interpreter with.

A reload runs on the watcher's thread: ~0.8 s of Python for 10,000 brands. CPython hands
the GIL between threads only every `sys.getswitchinterval()` (5 ms), so a request's brand
work (~1 ms on the event loop) that met a reload waited up to 5 ms at each hand-over: its p99
was 5-6x the idle one. A shorter interval alone shares the GIL fairly, which still doubles
the request. So the reload is polite instead: at points in its work (each brand validated
or indexed) it looks whether brand work is under way on the loop and, if so, naps, which
releases the GIL to it. After each nap it keeps the GIL for a short slice, so under a
saturating load it still gets about a tenth of the time and always finishes; between
requests it runs at full speed.
"""

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

NAP_S = 0.0005  # the reload's nap while brand work runs: about half a request's brand work
SLICE_S = 0.0001  # its work between naps: at least one brand, however busy the loop
SWITCH_S = 0.0005  # the interpreter's switch interval while a reload runs (5 ms otherwise)


def unpaced() -> None:
    """The pace of a build nothing waits on: no naps."""


class ReloadPacer:
    """Requests enter it (`with pacer:`) around their brand work; a reload calls `pace`."""

    def __init__(self, nap_s: float = NAP_S, slice_s: float = SLICE_S, switch_s: float = SWITCH_S):
        self.nap_s, self.slice_s, self.switch_s = nap_s, slice_s, switch_s
        self.active = 0  # brand work under way; changed on the loop's thread only
        self.naps = 0
        self._resume = 0.0
        self._reloads = 0
        self._lock = threading.Lock()
        self._interval = sys.getswitchinterval()

    # The loop's side: a plain counter, as cheap as a context manager can be.
    def __enter__(self) -> "ReloadPacer":
        self.active += 1
        return self

    def __exit__(self, *exc) -> None:
        self.active -= 1

    # The reload's side.
    def pace(self) -> None:
        if self.active and time.perf_counter() >= self._resume:
            time.sleep(self.nap_s)  # releases the GIL to the brand work under way
            self.naps += 1
            self._resume = time.perf_counter() + self.slice_s

    @contextmanager
    def reloading(self) -> Iterator[None]:
        """Around a whole reload: the shorter switch interval, so that a request arriving while
        the reload holds the GIL waits for it at most that long, not 5 ms. Overlapping reloads
        (a warm-up and a reload): the first sets it, the last restores it."""
        with self._lock:
            if self._reloads == 0:
                self._interval = sys.getswitchinterval()
                sys.setswitchinterval(min(self._interval, self.switch_s))
            self._reloads += 1
        try:
            yield
        finally:
            with self._lock:
                self._reloads -= 1
                if self._reloads == 0:
                    sys.setswitchinterval(self._interval)
