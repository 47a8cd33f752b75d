"""`emotion serve` over real HTTP on loopback: one server (a tiny face model made here, this process's backend)
started once for the module, its answers compared with `Predictor.predict_image`, its batches counted, bad requests
thrown at it, and finally SIGTERM'd while requests are in flight."""

from __future__ import annotations

import importlib.util
import io
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import BACKEND, REPO, png_header_only, tiny_face_model
from PIL import Image
from servers import Server, live_in_group

from emotion.tools.serve_bench import free_port

pytestmark = pytest.mark.skipif(importlib.util.find_spec("litserve") is None or
                                importlib.util.find_spec("httpx") is None,
                                reason="emotion[serve] (litserve, httpx) not installed")
MAX_BYTES = 200_000


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def jpeg(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def face_photo(seed: int = 0) -> np.ndarray:
    """A 200x160 picture with one synthetic face in it (found or not by the detector: either is a row)."""
    from emotion.data.synth import face

    canvas = noise(200, 160, seed) // 2
    canvas[40:136, 30:126] = face(0, np.random.default_rng(seed), size=96)
    return canvas


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The module's server: a tiny face model under this process's backend, its batches logged."""
    tmp = tmp_path_factory.mktemp("serve")
    model, batch_log = tiny_face_model(tmp / "tiny.keras"), tmp / "batches.txt"
    s = Server(tmp, "--model", str(model), "--max-batch-size", "8", "--batch-timeout", "0.05",
               "--max-bytes", str(MAX_BYTES), env={"KERAS_BACKEND": BACKEND, "EMOTION_SERVE_BATCH_LOG": str(batch_log)},
               runtime=())
    s.model, s.batch_log = model, batch_log
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def predictor(server):
    from emotion.predictor import Predictor

    return Predictor.load(server.model)


def assert_same_rows(got: list, want: list) -> None:
    assert len(got) == len(want) >= 1
    for g, w in zip(got, want, strict=True):
        assert set(g) == set(w) and "file" not in g
        assert {k: g[k] for k in ("face", "box", "whole_image", "label")} == \
            {k: w[k] for k in ("face", "box", "whole_image", "label")}
        assert g["score"] == pytest.approx(w["score"], abs=1e-4) if w["score"] is not None else g["score"] is None
        assert g["p"] == pytest.approx(w["p"], abs=1e-4)
        assert g["probs"].keys() == w["probs"].keys()
        for c in w["probs"]:
            assert g["probs"][c] == pytest.approx(w["probs"][c], abs=1e-4)


def test_health_openapi_and_info(server):
    import httpx

    assert server.health_seen <= {None, 503, 200}, "before the model loads: refused or 503, never another code"
    r = httpx.get(server.url + "/health")
    assert (r.status_code, r.text) == (200, "ok")
    spec = httpx.get(server.url + "/openapi.json").json()
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert {"image/*", "application/octet-stream", "multipart/form-data"} <= set(body)
    assert httpx.get(server.url + "/info").json()["model"]["runtime"] == "keras"


def test_prediction_equals_predict_image(server, predictor):
    from emotion.images import decode_image

    for arr in (face_photo(1), noise(90, 120, 2)):
        data = png(arr)
        want = predictor.predict_image(decode_image(data))
        r = server.post(data)
        assert r.status_code == 200 and r.headers["content-type"] == "application/json", r.text
        assert_same_rows(r.json(), want)
        import httpx  # the same image as a multipart form field

        form = httpx.post(server.url + "/predict", files={"image": ("x.png", data, "image/png")}, timeout=60)
        assert form.status_code == 200, form.text
        assert_same_rows(form.json(), want)
    crop = png(face_photo(4)[40:136, 30:126])  # ?faces=none: a face crop, classified whole
    r = httpx.post(server.url + "/predict?faces=none", content=crop, headers={"content-type": "image/png"})
    assert r.status_code == 200 and r.json()[0]["whole_image"]
    assert_same_rows(r.json(), predictor.predict_image(decode_image(crop), faces="none"))
    raw = jpeg(noise(64, 64, 3))  # application/octet-stream: the bytes are sniffed
    r = server.post(raw, "application/octet-stream")
    assert r.status_code == 200
    assert_same_rows(r.json(), predictor.predict_image(decode_image(raw)))


def test_concurrent_requests_form_batches(server):
    server.batch_log.write_text("")
    images = [png(face_photo(10 + i) if i % 2 else noise(64 + i, 80, i)) for i in range(16)]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(server.post, images))
    assert [r.status_code for r in answers] == [200] * 16
    calls = [[float(v) for v in line.split()] for line in server.batch_log.read_text().split("\n") if line]
    sizes = [int(c[0]) for c in calls]
    assert sum(sizes) == 16, sizes  # every request in exactly one model call
    assert all(len(c) == 5 and c[1] >= c[0] and min(c[2:]) >= 0 and c[4] > 0 for c in calls), calls
    assert sum(c[2] for c in calls) > 0 and sum(c[3] for c in calls) > 0, "decode and face times are logged"
    assert 1 < max(sizes) <= 8, f"no batch formed (or one over --max-batch-size 8): {sizes}"
    assert len(sizes) < 16


BAD = {
    "empty body": (b"", "image/png", 400),
    "not an image": (b"hello, world" * 10, "image/jpeg", 400),
    "truncated image": (jpeg(noise(200, 200))[:1500], "image/jpeg", 400),
    "decompression bomb (error)": (png_header_only(30_000, 30_000), "image/png", 413),
    "decompression bomb (warning)": (png_header_only(8_000, 7_000), "image/png", 413),
    "a 40 MP PNG (over the one 30 M decoded-pixel limit)": (png_header_only(8_000, 5_000), "image/png", 413),
    "over --max-bytes": (b"\xff\xd8" + bytes(MAX_BYTES), "image/jpeg", 413),
    "JSON content type": (b'{"image": "x"}', "application/json", 415),
    "text content type": (png(noise(8, 8)), "text/plain", 415),
    "form-urlencoded (curl --data-binary without -H)": (png(noise(8, 8)), "application/x-www-form-urlencoded", 415),
    "a format emotion does not read": (b"P6\n4 4\n255\n" + bytes(48), "image/x-portable-pixmap", 415),
    "multipart without a file": (b"--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n1\r\n--b--\r\n",
                                 "multipart/form-data; boundary=b", 400),
    "broken multipart": (b"garbage", "multipart/form-data; boundary=b", 400),
}


def test_bad_requests_get_a_4xx_and_the_server_goes_on(server):
    import httpx

    for what, (body, ctype, status) in BAD.items():
        r = server.post(body, ctype)
        assert r.status_code == status, (what, r.status_code, r.text)
        assert isinstance(r.json()["detail"], str) and r.json()["detail"], what
    chunks = (b"\xff" * 50_000 for _ in range(10))  # no Content-Length: the read stops past --max-bytes
    r = httpx.post(server.url + "/predict", content=chunks, headers={"content-type": "image/jpeg"}, timeout=60)
    assert r.status_code == 413 and "detail" in r.json()
    r = httpx.post(server.url + "/predict?faces=sideways", content=png(noise(8, 8)),
                   headers={"content-type": "image/png"})
    assert r.status_code == 400 and "faces must be one of" in r.json()["detail"]
    for method in ("GET", "PUT", "DELETE"):
        r = httpx.request(method, server.url + "/predict")
        assert r.status_code == 405 and "detail" in r.json()
    for arr in (noise(1, 1), noise(1, 900), noise(900, 2)):  # odd but valid images are answered
        r = server.post(png(arr))
        assert r.status_code == 200 and len(r.json()) == 1, r.text
    good = server.post(png(noise(50, 50)))
    assert good.status_code == 200 and good.json()[0]["label"] in ("happy", "sad")
    assert httpx.get(server.url + "/health").status_code == 200
    log = server.log.read_text()
    assert "Traceback" not in log and "Internal server error" not in log, log[-3000:]


def test_damaged_images_never_get_a_5xx(server):
    """Seeded damage to real JPEG, PNG and GIF files (cut short, bytes overwritten, header kept and body random):
    each is answered 200 or a 4xx, never a 5xx."""
    import httpx

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(face_photo(5)).convert("P").save(buf, format="GIF")
    originals = {"image/jpeg": jpeg(face_photo(5)), "image/png": png(noise(60, 40, 5)), "image/gif": buf.getvalue()}
    statuses = []
    for ctype, data in originals.items():
        for k in range(10):
            b = bytearray(data)
            if k < 4:
                b = b[: int(rng.integers(1, len(b)))]
            elif k < 8:
                at = rng.integers(0, len(b), 1 + k)
                b[at[0]:at[0] + 1] = b""  # a byte lost
                for i in at[1:]:
                    b[int(i) % len(b)] = int(rng.integers(256))
            else:
                b = b[:32] + rng.integers(0, 256, len(b) - 32, dtype=np.uint8).tobytes()
            r = httpx.post(server.url + "/predict", content=bytes(b), headers={"content-type": ctype}, timeout=60)
            statuses.append(r.status_code)
            assert r.status_code == 200 or 400 <= r.status_code < 500, (ctype, k, r.status_code, r.text)
    assert 400 in statuses
    assert httpx.get(server.url + "/health").status_code == 200


@pytest.mark.cross_backend
def test_port_in_use_and_missing_model_are_one_line_errors(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for args, words in ((["--port", str(port)], "cannot listen on 127.0.0.1 port"),
                            (["--model", str(tmp_path / "none.keras"), "--port", str(free_port())], "not found")):
            r = subprocess.run([sys.executable, "-m", "emotion", "serve", *args], capture_output=True, text=True,
                               env=env, cwd=tmp_path, timeout=120)
            assert r.returncode == 2, r.stderr
            lines = r.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("emotion: error:") and words in lines[0], r.stderr
    assert not (tmp_path / "client.py").exists(), "LitServe's client.py generator stays off"


def send_raw(port: int, body: bytes) -> socket.socket:
    """A whole POST /predict written to the server's socket (so it is on the server's side once this returns)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=120)
    s.sendall(b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\nConnection: close\r\n"
              b"Content-Length: %d\r\n\r\n" % len(body) + body)
    return s


def read_status(s: socket.socket) -> int:
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else -1


def test_sigterm_drains_in_flight_requests_and_exits_0(server):
    """SIGTERM to the server's whole process group (as systemd or `timeout` send it; to the main process alone
    is the easier case): requests in flight are answered, it exits 0 and leaves no process behind. (Last: it
    stops the module's server.)"""
    import select

    big = [jpeg(np.asarray(Image.fromarray(face_photo(40 + i)).resize((560, 700)))) for i in range(24)]
    assert max(map(len, big)) < MAX_BYTES
    socks = [send_raw(server.port, body) for body in big]
    time.sleep(0.3)  # for uvicorn to take the connections in
    answered = len(select.select(socks, [], [], 0)[0])
    os.killpg(server.proc.pid, signal.SIGTERM)
    statuses = [read_status(s) for s in socks]
    assert statuses == [200] * 24, f"{24 - answered} of 24 were in flight at SIGTERM"
    print(f"{24 - answered} of 24 requests in flight at SIGTERM")
    assert server.proc.wait(90) == 0, server.log.read_text()[-3000:]
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
    for _ in range(100):  # LitServe's resource tracker leaves when it notices the main process is gone
        if not live_in_group(server.proc.pid):
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"processes of the server's group still run: {live_in_group(server.proc.pid)}")
    assert "Traceback" not in server.log.read_text(), server.log.read_text()[-3000:]


@pytest.mark.cross_backend
def test_sizes_and_the_bench_report(tmp_path):
    """`--max-bytes` parsing, and serve-bench's targets, table and plot from made-up rows (no server)."""
    from emotion.errors import EmotionError
    from emotion.serve import parse_bytes
    from emotion.tools import serve_bench

    assert [parse_bytes(t) for t in ("10MB", "512kb", "1.5 GB", "123", "7B")] == [10**7, 512_000, 15 * 10**8, 123, 7]
    for bad in ("", "ten", "-1MB", "0", "5 TB"):
        with pytest.raises(EmotionError):
            parse_bytes(bad)
    rows = [{"server": s, "workload": w, "clients": c, "requests": 10, "errors": 0, "seconds": 1, "rps": rps,
             "p50_ms": 5.0, "p95_ms": 9.0, "p99_ms": p99, "mean_batch": None, "max_batch": None, "rss_mb": 900.0,
             "worker_ms_per_request": {"decode": 1.3, "faces": 11.0, "model": 3.5}}
            for w in ("face crops", "photos") for c in (1, 32)
            for s, rps, p99 in (("batched", 90.0 if c == 32 else 30.0, 80.0), ("unbatched", 30.0, 150.0))]
    t = serve_bench.targets(rows)
    assert t["crops_speedup_at_32"] == pytest.approx(3.0) and t["speedup_met"] and t["p99_met"]
    next(r for r in rows if (r["server"], r["workload"], r["clients"]) == ("unbatched", "face crops", 32))["rps"] = 100
    assert not serve_bench.targets(rows)["speedup_met"]
    result = {"command": "emotion serve-bench", "date": "today", "machine": {"cpus": 2, "platform": "p", "python": "3",
              "load_avg_at_end": (1.0, 1.0, 1.0)}, "model": "m", "backend": "b", "runtime": "keras", "seconds": 1,
              "batch_timeout": 0.005, "client": "raw", "workers": 1, "mean_body_bytes": {"face crops": 2000},
              "photos_from": "synthetic", "rows": rows, "targets": serve_bench.targets(rows),
              "servers": {"batched": {"max_batch_size": 32, "startup_s": 1, "idle_rss_mb": 1, "exit_code": 0}}}
    md = serve_bench.markdown(result)
    assert md.count("\n| face crops |") == 4 and "NOT met" in md
    assert md.count("| 1.3 / 11.0 / 3.5 |") == 8, "each row says where the worker's time went"
    serve_bench.plot(rows, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000
    assert serve_bench.tree_rss_mb(os.getpid()) > 10


@pytest.mark.cross_backend
def test_runtime_onnx_serves_the_same_rows(tmp_path):
    """`--runtime onnx` is passed to `Predictor.load` as is: the shipped model's ONNX export under onnxruntime
    answers what `Predictor.load(runtime="onnx").predict_image` gives."""
    import httpx

    from emotion.images import decode_image
    from emotion.predictor import Predictor

    s = Server(tmp_path)  # the shipped model, --runtime onnx
    try:
        data = png(face_photo(7))
        r = s.post(data)
        assert r.status_code == 200, r.text
        assert_same_rows(r.json(), Predictor.load(runtime="onnx").predict_image(decode_image(data)))
        assert httpx.get(s.url + "/info").json()["model"]["runtime"] == "onnx"
        s.proc.send_signal(signal.SIGTERM)
        assert s.proc.wait(60) == 0, s.log.read_text()[-2000:]
    finally:
        s.stop()


@pytest.mark.cross_backend
def test_bench_compares_metrics_and_keys():
    """serve-bench's side-by-side servers: the metrics' cost at 32 clients, the key check in its report, and
    --servers checked (no server started)."""
    from types import SimpleNamespace

    from emotion.errors import EmotionError
    from emotion.tools import serve_bench

    rows = [{"server": s, "workload": "face crops", "clients": 32, "requests": 10, "errors": 0, "seconds": 1,
             "rps": rps, "p50_ms": 5.0, "p95_ms": 9.0, "p99_ms": 50.0, "mean_batch": 8.0, "max_batch": 9,
             "rss_mb": 1.0, "worker_ms_per_request": {"decode": 1.0, "faces": 1.0, "model": 1.0}}
            for s, rps in (("batched", 97.5), ("no-metrics", 100.0), ("keys", 95.0))]
    t = serve_bench.targets(rows)
    assert t["metrics_cost_at_32"] == pytest.approx(0.025) and t["metrics_met"] and "speedup_met" not in t
    rows[0]["rps"] = 90.0
    assert not serve_bench.targets(rows)["metrics_met"]
    servers = {n: {"max_batch_size": 32, "startup_s": 1, "idle_rss_mb": 1, "exit_code": 0} for n in
               ("batched", "no-metrics", "keys")}
    servers["keys"]["key_check"] = {"requests": 1000, "answered_200_without_key": 0, "answered_200_wrong_key": 0,
                                    "statuses": {"401": 1000}}
    md = serve_bench.markdown({"command": "c", "date": "d", "machine": {"cpus": 2, "platform": "p", "python": "3",
                               "load_avg_at_end": None}, "model": "m", "backend": "b", "runtime": "onnx",
                               "seconds": 1, "batch_timeout": 0.005, "client": "raw", "workers": 1,
                               "mean_body_bytes": {"face crops": 2000}, "photos_from": "synthetic", "rows": rows,
                               "targets": serve_bench.targets(rows), "servers": servers})
    assert "10.0% requests/s below the same server with --no-metrics" in md and "NOT met" in md
    assert "of 1000 requests without a key or with a wrong one, 0 answered 200" in md
    for bad in ("unbatched", "batched,fast", "batched,batched"):
        with pytest.raises(EmotionError, match="--servers"):
            serve_bench.run(SimpleNamespace(concurrency="1", seconds=1, max_batch_size=32, servers=bad, out="x"))
