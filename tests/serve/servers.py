"""Helpers of the serve tests: an `emotion serve` subprocess on a free loopback port (the shipped model under
onnxruntime unless told otherwise), ready when it returns; a face photo; the processes under /proc."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time

import numpy as np
from conftest import REPO
from PIL import Image

from emotion.tools.serve_bench import free_port

NEEDS = ("litserve", "httpx", "onnxruntime", "prometheus_client")
NEEDS_REASON = "emotion[serve] (litserve, httpx, onnxruntime, prometheus-client) not installed"


def photo_jpeg(seed: int = 0, size=(480, 360)) -> bytes:
    from emotion.data.synth import face

    rng = np.random.default_rng(seed)
    canvas = Image.fromarray(rng.integers(0, 128, (size[1], size[0], 3), dtype=np.uint8))
    canvas.paste(face(0, rng, size=160), (100, 60))
    buf = io.BytesIO()
    canvas.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _live_with(field: int, value: int) -> list[int]:
    """The processes, zombies left out, whose /proc/PID/stat field ``field`` (after the name) is ``value``."""
    out = []
    for entry in os.listdir("/proc"):
        try:
            fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[field]) == value and fields[0] != "Z":
            out.append(int(entry))
    return out


def children(pid: int) -> list[int]:
    return _live_with(1, pid)  # the parent's pid


def live_in_group(pgid: int) -> list[int]:
    """Processes of group ``pgid`` that are not zombies (one whose parent has gone may wait for a reaper)."""
    return _live_with(2, pgid)  # the process group


def cmdline(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


class Server:
    def __init__(self, tmp, *args: str, env: dict | None = None, runtime: tuple = ("--runtime", "onnx")):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"server-{self.port}.log"
        env = dict(os.environ, **(env or {}),
                   PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "emotion", "serve", *runtime, "--port", str(self.port),
                 "--log-level", "warning", *args], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp,
                start_new_session=True)
        import httpx

        self.health_seen = set()  # /health's answers while the model loads
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"exited {self.proc.returncode}: {self.log.read_text()[-2000:]}"
            try:
                status = httpx.get(self.url + "/health", timeout=5).status_code
            except httpx.TransportError:
                status = None  # LitServe listens only once its first worker has loaded the model
            self.health_seen.add(status)
            if status == 200:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("not ready in 300 s: " + self.log.read_text()[-2000:])

    def post(self, body: bytes, content_type: str = "image/png", **kw):
        import httpx

        return httpx.post(self.url + "/predict", content=body, headers={"content-type": content_type},
                          timeout=60, **kw)

    def processes(self) -> dict[str, int]:
        """The main process's children by role: worker (spawned), http (forked uvicorn), manager."""
        roles = {}
        for pid in children(self.proc.pid):
            line = cmdline(pid)
            if "resource_tracker" in line:
                continue
            if "spawn_main" in line:
                roles["worker"] = pid
            else:
                roles.setdefault("forked", []).append(pid)
        # the forked children: LitServe's queue manager starts first, the HTTP process last
        forked = sorted(roles.pop("forked", []))
        roles["manager"], roles["http"] = forked[0], forked[-1]
        return roles

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
