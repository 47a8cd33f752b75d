"""The error a user can fix (`EmotionError`, told in one line), how such lines reach standard error, and the
stop a user asks for (Ctrl-C, SIGTERM) reaching the command even where Python swallows it."""

import contextlib
import os
import signal
import sys
import threading


class EmotionError(Exception):
    """A problem the user can fix (bad path, bad data, bad model file). The CLI prints it on one line."""


# File descriptor 2 is the process's, not a thread's: one `quiet_stderr` at a time (a second one would save the
# first one's /dev/null and restore it), and no message of ours while another thread has it silenced.
_STDERR = threading.RLock()


@contextlib.contextmanager
def quiet_stderr():
    """Silence file descriptor 2 (C++ logging that no setting turns off: LiteRT, OpenCV's video backends) for
    the duration; `tell` waits for it to end."""
    with _STDERR:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            with open(os.devnull, "w") as null:
                os.dup2(null.fileno(), 2)
                yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def tell(line: str) -> None:
    """One line to standard error, never into another thread's `quiet_stderr`."""
    with _STDERR:
        print(line, file=sys.stderr, flush=True)


class Terminated(KeyboardInterrupt):
    """SIGTERM, told as Ctrl-C is (a supervisor's stop, `kill PID`): the command stops where it is, its files whole."""


_STOPS: list[KeyboardInterrupt] = []  # the stops asked for while `stops_as_interrupts` holds


@contextlib.contextmanager
def stops_as_interrupts():
    """Ctrl-C raises `KeyboardInterrupt` and SIGTERM `Terminated` in the main thread, and each stop is also kept.

    Python runs a signal's handler between two bytecodes of whatever the main thread runs; when that is a
    garbage-collection callback or a ``__del__`` (JAX registers one), the exception is printed as "Exception
    ignored in ..." and lost, and a long command would go on to its end. `raise_if_stopped`, called by the
    training loop after every batch, raises a kept stop again. Outside the main thread, signals are left alone,
    and so is a signal the process was started with ignored (`nohup`, a shell's background job).

        with stops_as_interrupts():
            for batch in batches:
                step(batch)
                raise_if_stopped()
    """
    def stop(signum, frame):
        e = Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
        _STOPS.append(e)
        raise e

    try:
        previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)
                    if signal.getsignal(s) != signal.SIG_IGN}
    except ValueError:  # not the main thread (main() called from a thread): leave signals alone
        yield
        return
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
        _STOPS.clear()


def raise_if_stopped() -> None:
    """Raise the first stop asked for under `stops_as_interrupts`, if one was (and was lost where it arose)."""
    if _STOPS:
        raise type(_STOPS[0])()
