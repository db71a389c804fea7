"""Worker processes that end with the process that started them.

A pool worker (the probe pool's, the processes executor's) waits on its task queue; if the run
that started it is killed (kill -9, the OOM killer, a test's timeout), the queue's other end is
held by the worker itself, so it would wait forever, holding its memory, and keep the
multiprocessing resource tracker alive with it. `exit_with_parent`, called in the worker's
initializer, ends the worker within a second of its parent's death; the tracker, whose pipe
then has no writer left, exits on its own.
"""
from __future__ import annotations

import os
import threading
import time

CHECK_EVERY_S = 0.5


def exit_with_parent(parent: int, interval: float = CHECK_EVERY_S) -> None:
    """In a worker process: end it once `parent` (the pid of the process that started it, passed
    from there) is no longer its parent, i.e. it was re-parented because `parent` died. A daemon
    thread polls `os.getppid()` every `interval` seconds. The pid comes from the parent because a
    worker still importing when its parent dies would read the new parent's pid and wait forever."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)  # no cleanup to run: the process that wanted the results is gone

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
