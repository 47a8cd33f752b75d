"""The error a user can fix (`EmotionError`, told in one line), and how such lines reach standard error."""

import contextlib
import os
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
