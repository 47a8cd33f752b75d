"""`emotion serve` when its own processes die and when clients are slow or go away (issue 29, items 3-6): the
shipped model under onnxruntime (quick to start, no Keras backend), one server per case, on loopback."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from servers import NEEDS, NEEDS_REASON, Server, alive, photo_jpeg

pytestmark = [pytest.mark.once,
              pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in NEEDS), reason=NEEDS_REASON),
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; signals")]


@pytest.fixture
def start(tmp_path):
    servers = []

    def make(*args):
        servers.append(Server(tmp_path, *args))
        return servers[-1]

    yield make
    for s in servers:
        s.stop()


def test_a_dead_worker_means_503_at_once_then_exit_4(start):
    """SIGKILL of the inference worker with requests in flight: every one is answered (200 or 503, none hangs),
    /health turns 503 within a second, and the server exits 4 with a one-line reason."""
    import httpx

    s = start("--max-batch-size", "4")
    roles = s.processes()
    body = photo_jpeg()

    def post(_):
        t0 = time.monotonic()
        try:
            r = httpx.post(s.url + "/predict", content=body, headers={"content-type": "image/jpeg"}, timeout=20)
            return r.status_code, time.monotonic() - t0
        except httpx.TransportError:
            return -1, time.monotonic() - t0

    with ThreadPoolExecutor(24) as pool:
        answers = pool.map(post, range(24))
        time.sleep(0.3)  # requests in flight
        os.kill(roles["worker"], signal.SIGKILL)
        t_kill = time.monotonic()
        health = None
        while time.monotonic() - t_kill < 1.0:
            try:
                health = httpx.get(s.url + "/health", timeout=1).status_code
            except httpx.TransportError:
                health = "refused"
            if health == 503:
                break
            time.sleep(0.02)
        answers = list(answers)
    assert health == 503, f"/health answered {health} after the worker died"
    codes = [c for c, _ in answers]
    assert set(codes) <= {200, 503} and 503 in codes, codes
    assert max(t for _, t in answers) < 10, "a request hung"
    assert s.proc.wait(30) == 4, s.log.read_text()[-2000:]
    errors = [line for line in s.log.read_text().splitlines() if line.startswith("emotion: error:")]
    assert len(errors) == 1 and "inference worker" in errors[0] and "SIGKILL" in errors[0], s.log.read_text()
    assert "Traceback" not in s.log.read_text()
    time.sleep(0.5)
    assert not any(alive(p) for p in roles.values()), "a process of the server outlived it"


def test_a_request_still_arriving_when_the_worker_dies_is_answered_503(start):
    """The race behind a dropped request: its headers passed the door while the worker lived, its body arrived
    after the worker died. It must be answered 503 (no worker would ever answer it), not held until the HTTP
    process is stopped and its connection closed."""
    body = photo_jpeg()
    s = start()
    roles = s.processes()
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=10)
    sock.sendall(b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\n"
                 + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:100])
    time.sleep(0.3)  # the request is in the route, reading its body
    os.kill(roles["worker"], signal.SIGKILL)
    time.sleep(0.3)  # the HTTP process has seen the death (it answers /health 503 within a second)
    t0 = time.monotonic()
    sock.sendall(body[100:])
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
            if b"\r\n\r\n" in data and b"detail" in data:
                break
    except OSError:
        pass
    sock.close()
    assert data.startswith(b"HTTP/1.1 503") and b"inference worker" in data, data[:300]
    assert time.monotonic() - t0 < 0.9, "answered only when the HTTP process was stopped"
    assert s.proc.wait(30) == 4, s.log.read_text()[-2000:]


def test_a_dead_http_process_means_exit_5(start):
    s = start()
    roles = s.processes()
    os.kill(roles["http"], signal.SIGKILL)
    assert s.proc.wait(30) == 5, s.log.read_text()[-2000:]
    errors = [line for line in s.log.read_text().splitlines() if line.startswith("emotion: error:")]
    assert len(errors) == 1 and "HTTP process" in errors[0], s.log.read_text()
    assert "Traceback" not in s.log.read_text() and "internal error" not in s.log.read_text()
    time.sleep(0.5)
    assert not any(alive(p) for p in roles.values())


def test_children_die_with_the_main_process(start):
    """SIGKILL of the main process alone (a supervisor's last word): its worker, HTTP process and queue manager
    follow it (no orphan keeps the model and the port)."""
    s = start()
    roles = s.processes()
    s.proc.kill()
    s.proc.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(p) for p in roles.values()):
        time.sleep(0.1)
    left = {k: p for k, p in roles.items() if alive(p)}
    assert not left, f"still running after the main process was killed: {left}"
    deadline = time.monotonic() + 10  # the port is free again: nothing listens (a process that has just exited may
    while True:                       # still be closing its files; connections in TIME_WAIT may remain, as a
        with socket.socket() as sock:  # restarted server, uvicorn, allows)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", s.port))
                sock.listen()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
        time.sleep(0.2)


def test_slow_and_vanishing_clients(start):
    """A body announced but not sent: 408 after --body-timeout; headers never finished: 408 after
    --header-timeout; a client that leaves mid-body: one log line, no traceback; the server answers throughout."""
    import httpx

    s = start("--body-timeout", "1", "--header-timeout", "1.5", "--timeout-keep-alive", "1")
    body = socket.create_connection(("127.0.0.1", s.port), timeout=10)
    body.sendall(b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\nContent-Length: 1000000\r\n\r\n"
                 + b"\xff\xd8" + bytes(8))
    heads = [socket.create_connection(("127.0.0.1", s.port), timeout=10) for _ in range(20)]
    for h in heads:
        h.sendall(b"POST /predict HTTP/1.1\r\nHost: t\r\n")  # and never the rest
    idle = socket.create_connection(("127.0.0.1", s.port), timeout=10)  # sends nothing at all
    t0 = time.monotonic()
    assert httpx.get(s.url + "/health", timeout=5).status_code == 200  # others are served meanwhile

    def answer(sock) -> bytes:
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except OSError:
            pass
        sock.close()
        return data

    got = answer(body)
    assert got.startswith(b"HTTP/1.1 408") and b"not received within 1 s" in got, got[:300]
    assert time.monotonic() - t0 < 5
    for h in heads:
        got = answer(h)
        assert got.startswith(b"HTTP/1.1 408") and b"headers not received" in got, got[:300]
    assert answer(idle).startswith(b"HTTP/1.1 408")
    assert time.monotonic() - t0 < 8, "the header deadline did not close them"
    gone = socket.create_connection(("127.0.0.1", s.port), timeout=10)
    gone.sendall(b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\nContent-Length: 50000\r\n\r\n"
                 + b"\xff\xd8" + bytes(100))
    time.sleep(0.3)
    gone.close()
    time.sleep(0.5)
    r = httpx.post(s.url + "/predict", content=photo_jpeg(3), headers={"content-type": "image/jpeg"}, timeout=30)
    assert r.status_code == 200
    log = s.log.read_text()
    assert "Traceback" not in log and "ClientDisconnect" not in log, log[-3000:]
    assert sum("went away after 102 of 50000 bytes" in line for line in log.splitlines()) == 1, log[-3000:]
