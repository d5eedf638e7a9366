"""A brands reload that gives way to the requests it shares the interpreter with.

A reload runs on the watcher's thread: ~0.8 s of Python for 10,000 brands. CPython hands
the GIL between threads only every `sys.getswitchinterval()` (5 ms), so a request's brand
work (~1 ms on the event loop) that met a reload waited up to 5 ms at each hand-over: its p99
was 5-6x the idle one. A shorter interval alone shares the GIL fairly, which still doubles
the request. So the reload is polite instead: at points in its work (each brand validated
or indexed) it looks whether brand work is under way on the loop and, if so, naps, which
releases the GIL to it. After each nap it keeps the GIL for a short slice, so under a
saturating load it still gets about a sixth of the time and always finishes; between
requests it runs at full speed.
"""

import sys
import threading
import time

NAP_S = 0.0005  # the reload's nap while brand work runs: about half a request's brand work
SLICE_S = 0.0001  # its work between naps: at least one brand, however busy the loop
SWITCH_S = 0.0005  # the interpreter's switch interval while a reload runs (5 ms otherwise)


def unpaced() -> None:
    """The pace of a build nothing waits on: no naps."""


class ReloadPacer:
    """`serving` is entered by the loop around brand work; `pace` is called by the reload."""

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

    def reloading(self) -> "_Reloading":
        """Around a whole reload: the shorter switch interval, so that a request arriving while
        the reload holds the GIL waits for it at most that long, not 5 ms."""
        return _Reloading(self)


class _Reloading:
    def __init__(self, pacer: ReloadPacer):
        self._pacer = pacer

    def __enter__(self) -> None:
        pacer = self._pacer
        with pacer._lock:  # overlapping reloads: the first sets the interval, the last restores it
            if pacer._reloads == 0:
                pacer._interval = sys.getswitchinterval()
                sys.setswitchinterval(min(pacer._interval, pacer.switch_s))
            pacer._reloads += 1

    def __exit__(self, *exc) -> None:
        pacer = self._pacer
        with pacer._lock:
            pacer._reloads -= 1
            if pacer._reloads == 0:
                sys.setswitchinterval(pacer._interval)
