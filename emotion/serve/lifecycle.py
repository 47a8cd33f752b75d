"""The processes of `emotion serve` watching one another: children that die with their parent, an HTTP process
that answers 503 the moment an inference worker dies, and a main process that stops the server with a one-line
reason and an exit code of its own when any of its processes dies.

    die_with_parent(os.getppid())          # in a child: SIGKILL once the main process is gone (Linux: prctl)

Exit codes of `emotion serve` (docs/serving.md): 0 a clean stop (SIGTERM, Ctrl+C), 2 bad usage, 3 a bug,
WORKER_DIED when an inference worker died, PROCESS_DIED when the HTTP process or LitServe's queue manager died.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import multiprocessing as mp
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field

from fastapi import HTTPException

WORKER_DIED = 4  # exit code: an inference worker died (killed, out of memory, a crash in native code)
PROCESS_DIED = 5  # exit code: the HTTP process or LitServe's queue manager died
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
DEATH_GRACE = 1.0  # seconds the HTTP processes go on answering 503 after a worker died (load balancers see it)
log = logging.getLogger("emotion.serve")


@dataclass
class State:
    """What this HTTP process knows of the worker: ``dead`` is the reason, once one has died."""
    dead: str | None = None


STATE = State()  # one per process (the HTTP processes are forked: each has its own)


def die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when its parent exits (Linux's PR_SET_PDEATHSIG); elsewhere a
    thread that watches the parent. Exits at once if the parent is already gone (it died before this ran)."""
    done = False
    if sys.platform.startswith("linux"):
        try:
            done = ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
        except (OSError, AttributeError):
            done = False
    if os.getppid() != parent:
        os._exit(1)
    if not done:
        def watch():
            while os.getppid() == parent:
                time.sleep(1)
            os._exit(1)

        threading.Thread(target=watch, name="emotion-parent-watch", daemon=True).start()


def exit_reason(proc) -> str:
    code = proc.exitcode
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def watch_workers(pids: list[int], server) -> None:
    """In an HTTP process (inside its event loop): the moment an inference worker dies, answer 503 to every
    request waiting on it, and (through STATE, read by the gate) to /health and every new request."""
    loop = asyncio.get_running_loop()

    def dead(pid: int) -> None:
        if STATE.dead:
            return
        STATE.dead = f"the inference worker (pid {pid}) died; the server is stopping"
        held = 0
        for item in list(server.response_buffer.values()):
            if not item.event.is_set():
                from litserve.utils import LitAPIStatus  # here: litserve is optional or slow to import

                item.response = (HTTPException(503, STATE.dead), LitAPIStatus.ERROR)
                item.event.set()
                held += 1
        log.error("%s: %d request(s) held answered 503", STATE.dead, held)

    for pid in pids:
        try:
            fd = os.pidfd_open(pid)  # readable once the process has exited (Linux 5.3+)
        except (AttributeError, OSError):
            loop.create_task(_poll_pid(pid, dead))
            continue
        loop.add_reader(fd, lambda fd=fd, pid=pid: (loop.remove_reader(fd), os.close(fd), dead(pid)))


async def _poll_pid(pid: int, dead) -> None:
    while True:
        try:
            with open(f"/proc/{pid}/stat") as f:
                gone = f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
        except OSError:
            try:
                os.kill(pid, 0)
                gone = False
            except ProcessLookupError:
                gone = True
            except PermissionError:
                gone = False
        if gone:
            return dead(pid)
        await asyncio.sleep(0.1)


@dataclass
class Watch:
    """In the main process: notices the first of its processes (inference workers, HTTP processes, LitServe's
    queue manager) to die once the server is up, says why in one line, and stops the rest. ``stopping`` is set
    by the SIGTERM drain, which ends processes on purpose."""
    server: object
    stopping: bool = False
    reason: str | None = None
    code: int = 0
    done: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        threading.Thread(target=self._run, name="emotion-watch", daemon=True).start()

    def _run(self) -> None:
        while not self.stopping:
            http = list(getattr(self.server, "http_processes", None) or [])
            if not http:  # not up yet: a death before (a failed setup, say) is LitServe's to report
                time.sleep(0.05)
                continue
            workers = list(getattr(self.server, "inference_workers", None) or [])
            manager = getattr(self.server, "manager_process", None)
            procs = [*workers, *http, *([manager] if manager is not None else [])]
            dead = [p for p in procs if p.exitcode is not None]
            if self.stopping:
                return
            if dead:
                return self._died(dead[0], workers, http)
            multiprocessing.connection.wait([p.sentinel for p in procs], timeout=0.5)

    def _died(self, proc, workers, http) -> None:
        if proc in workers:
            what, self.code = "the inference worker", WORKER_DIED
        elif proc in http:
            what, self.code = "the HTTP process", PROCESS_DIED
        else:
            what, self.code = "LitServe's queue manager", PROCESS_DIED
        self.reason = (f"{what} (pid {proc.pid}) died ({exit_reason(proc)}): the server stops, exit code "
                       f"{self.code}, for a supervisor to start it again")
        print(f"emotion: error: {self.reason}", file=sys.stderr, flush=True)
        try:
            self._stop_all()
        finally:
            self.done.set()

    def _stop_all(self) -> None:
        """The HTTP processes first (held requests have had their 503 from the HTTP side), then the workers,
        then LitServe's shutdown (its run() returns)."""
        http = [p for p in getattr(self.server, "http_processes", []) if p.is_alive()]
        if self.code == WORKER_DIED:
            time.sleep(DEATH_GRACE)
        for p in http:
            os.kill(p.pid, signal.SIGTERM)
        for p in http:
            p.join(5)
        for p in list(getattr(self.server, "inference_workers", None) or []) + http:
            if p.is_alive():
                p.kill()
                p.join(5)
        self.server.inference_workers = []
        try:
            self.server._shutdown_event.set()
        except Exception:  # the queue manager is gone: run() fails on its own, serve() returns the code
            pass

    def kill_children(self) -> None:
        for p in mp.active_children():
            p.kill()
            p.join(5)
