"""Where a request's time goes inside a serving process: bench/token_load.py --breakdown.

Python imports this module at startup when bench/probe is on PYTHONPATH; it does nothing unless
BENCH_PROBE_FILE names a file. Then it wraps two of waitress's own methods (3.x):

- ``BaseWSGIServer.add_task``: the main thread has read a whole request and queues its channel
  for a worker thread; the time is noted on the channel.
- ``HTTPChannel.service``: a worker runs the application and writes the answer (waitress's
  workers send the answer themselves).

and appends, per request: the wall-clock time it was queued, then in seconds the wait in
waitress's queue, the wall time in the application, and the worker thread's CPU time in it
(``time.thread_time``). The difference between the last two is time the worker was ready but
not running: waiting for the database, or for the interpreter lock or the CPU while other
threads ran. Records are written 1,000 at a time, and at exit. Bench code only: this patches
waitress's internals and is never loaded by the gateway itself.
"""

import atexit
import os
import threading
import time

PROBE_FILE = os.environ.get("BENCH_PROBE_FILE")


def _install(path: str) -> None:
    from waitress.channel import HTTPChannel
    from waitress.server import BaseWSGIServer

    records: list[tuple[float, float, float, float]] = []
    lock = threading.Lock()

    def write(batch: list) -> None:
        with open(path, "a") as out:
            out.writelines(" ".join(f"{value:.6f}" for value in record) + "\n" for record in batch)

    def flush() -> None:
        with lock:
            batch = records[:]
            records.clear()
        write(batch)

    add_task, service = BaseWSGIServer.add_task, HTTPChannel.service

    def queued(self, channel):
        channel.bench_queued = (time.time(), time.perf_counter())
        return add_task(self, channel)

    def serviced(self):
        queued_at, queued_clock = getattr(self, "bench_queued", (time.time(), None))
        start, cpu = time.perf_counter(), time.thread_time()
        service(self)
        wall, cpu = time.perf_counter() - start, time.thread_time() - cpu
        waited = start - queued_clock if queued_clock is not None else 0.0
        with lock:
            records.append((queued_at, waited, wall, cpu))
            full = len(records) >= 1000
        if full:
            flush()

    BaseWSGIServer.add_task, HTTPChannel.service = queued, serviced
    atexit.register(flush)


if PROBE_FILE:
    _install(PROBE_FILE)
