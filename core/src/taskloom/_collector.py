"""The cyclic garbage collector while a pipeline runs."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

RUN_THRESHOLD = 100_000
"""Young objects allowed before a collection during a run (CPython's default is 700)."""

_lock = threading.Lock()
_runs = 0
_saved: tuple[tuple[int, ...], bool] | None = None  # the thresholds before the first run, and whether it froze


@contextmanager
def run_collector() -> Iterator[None]:
    """Collect rarely during a run, and never among the objects that existed before it.

    A run keeps hundreds of requests in flight, each holding a few hundred objects (its row,
    coroutines, futures, the HTTP exchange) for as long as the server takes. At CPython's default
    threshold the collector walks those survivors every 700 allocations and finds nothing to free:
    the objects of a run die by reference count. Measured on 1,000 rows at 256 in flight, that
    was 90 to 120 µs of CPU per row, a sixth of the process's work, so during a run the young
    generation may grow to 100,000 objects before it is collected (a few megabytes of garbage
    cycles at most). Objects from before the run (imports, the caller's data) are frozen, so full
    collections skip them; a cycle among them that became garbage during the run waits until
    the run ends, when they go back to the collector and the thresholds are restored.

    Process-wide, so counted: runs in several threads share one setting, put back by the last
    to end. A collector the caller turned off stays off, and a process that froze objects itself
    (a pre-fork server) keeps its freeze.
    """
    global _runs, _saved
    with _lock:
        if _runs == 0:
            thresholds = gc.get_threshold()
            if gc.isenabled() and thresholds[0] > 0:
                freeze = gc.get_freeze_count() == 0
                if freeze:
                    gc.freeze()
                gc.set_threshold(max(thresholds[0], RUN_THRESHOLD), *thresholds[1:])
                _saved = (thresholds, freeze)
        _runs += 1
    try:
        yield
    finally:
        with _lock:
            _runs -= 1
            if _runs == 0 and _saved is not None:
                saved, froze = _saved
                _saved = None
                gc.set_threshold(*saved)
                if froze:
                    gc.unfreeze()
