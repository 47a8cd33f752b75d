"""`emotion serve-bench`: load-test `emotion serve` on loopback, with dynamic batching and without.

Two servers are started in turn (subprocesses on a free port): one as asked (``--max-batch-size``, default 32)
and one with batching off (``--max-batch-size 1``). Each is driven by httpx.AsyncClient with 1, 8, 32, 64
concurrent clients for ``--seconds`` per level (each client posts, waits for the answer, posts again), on two
workloads: face crops (small synthetic faces, 64-96 px, posted to /predict?faces=none as a client that crops
its own faces would: no detection) and photos (640x480 synthetic scenes with faces in them, or the images of
``--data``, posted to /predict: faces found, the largest classified). Per level: requests/s, latency
p50/p95/p99, errors, the mean number of images per model call and where the inference worker's time goes per
request (decode, find faces and crop, model; both from the server's EMOTION_SERVE_BATCH_LOG), and the peak
resident memory of the server's process tree (the sum of VmRSS over its processes, shared pages counted in
each). The client runs on the same machine and takes CPU from the server: the numbers are for this machine, as
loaded as it is. The load comes from a lean asyncio HTTP/1.1 client (``--client raw``); ``--client httpx`` costs
the client more CPU per request than the server spends, so no batch can form on a small machine (measured in
docs/serving.md).

``--servers`` picks the servers compared, side by side in one run: ``batched`` (as asked), ``unbatched``
(``--max-batch-size 1``), ``no-metrics`` (batched, ``--no-metrics``: what /metrics costs) and ``keys`` (batched,
behind an API key that its clients send; before its load, 1,000 requests without a key and with a wrong one,
of which none may be answered 200).

Writes serve-bench.md, serve-bench.json and serve-bench.png into ``--out``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import io
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from emotion.data.synth import face
from emotion.errors import EmotionError
from emotion.files import write_atomic
from emotion.predictor import image_files

LEVELS = (1, 8, 32, 64)
SERVERS = ("batched", "unbatched", "no-metrics", "keys")
BENCH_KEY = "serve-bench-key-0123456789"


def add_arguments(p) -> None:
    p.add_argument("--model", help="a .keras file (default: the shipped happy/sad face model)")
    p.add_argument("--backend", dest="serve_backend", choices=["jax", "tensorflow", "torch"],
                   help="the servers' Keras backend (default: $KERAS_BACKEND)")
    p.add_argument("--runtime", choices=["keras", "onnx"], default="keras")
    p.add_argument("--seconds", type=float, default=10, help="seconds per concurrency level (default 10)")
    p.add_argument("--warmup", type=float, default=3, help="seconds of load before each workload's levels")
    p.add_argument("--concurrency", default=",".join(map(str, LEVELS)),
                   help="concurrent clients per level, comma-separated (default 1,8,32,64)")
    p.add_argument("--max-batch-size", type=int, default=32, help="the batched server's (default 32)")
    p.add_argument("--batch-timeout", type=float, default=0.005, help="the batched server's (default 0.005)")
    p.add_argument("--workers", type=int, default=1, help="inference processes per server (default 1)")
    p.add_argument("--data", help="a folder of images for the photos workload (default: synthetic photos)")
    p.add_argument("--images", type=int, default=48, help="distinct images per workload (default 48)")
    p.add_argument("--client", choices=["raw", "httpx"], default="raw",
                   help="the load generator: raw (asyncio streams, default) or httpx.AsyncClient; httpx spends "
                        "~10 ms of CPU per request here, throttling the load it means to make (docs/serving.md)")
    p.add_argument("--servers", default="batched,unbatched",
                   help=f"servers compared in this run, comma-separated, of {', '.join(SERVERS)} "
                        "(default batched,unbatched)")
    p.add_argument("--out", default="runs/serve-bench")


# ----------------------------------------------------------------------------------------------- workloads
def _jpeg(arr: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def face_crops(n: int, seed: int = 0) -> list[bytes]:
    """Small face images (64-96 px), as a client that crops its own faces would send."""
    rng = np.random.default_rng(seed)
    return [_jpeg(np.asarray(face(int(rng.integers(2)), rng, size=int(rng.integers(64, 97))))) for _ in range(n)]


def photos(n: int, seed: int = 1, size=(640, 480)) -> list[bytes]:
    """Synthetic photos: a smooth, noisy scene with one to three faces (90-200 px) in it."""
    rng = np.random.default_rng(seed)
    w, h = size
    out = []
    for _ in range(n):
        yy, xx = np.mgrid[0:h, 0:w]
        base = rng.uniform(40, 200, 3) + rng.uniform(-60, 60, 3) * (xx[..., None] / w) \
            + rng.uniform(-60, 60, 3) * (yy[..., None] / h)
        canvas = Image.fromarray(np.clip(base + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8))
        for _ in range(int(rng.integers(1, 4))):
            s = int(rng.integers(90, 201))
            canvas.paste(face(int(rng.integers(2)), rng, size=s), (int(rng.integers(0, w - s)),
                                                                  int(rng.integers(0, h - s))))
        out.append(_jpeg(np.asarray(canvas)))
    return out


def folder_images(folder: str, n: int) -> list[bytes]:
    files = image_files([folder])
    if not files:
        raise EmotionError(f"no image files in {folder}")
    step = max(1, len(files) // n)
    return [f.read_bytes() for f in files[::step][:n]]


# ----------------------------------------------------------------------------------------------- the server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_rss_mb(pid: int) -> float:
    """Sum of VmRSS over ``pid`` and its descendants, MB (0 where /proc is not there)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


class ServerProcess:
    def __init__(self, args, max_batch_size: int, workdir: Path, name: str | None = None, extra: tuple = ()):
        import httpx  # here: httpx is optional or slow to import

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        name = name or str(max_batch_size)
        self.batch_log = workdir / f"batches-{name}.txt"
        self.log = workdir / f"server-{name}.log"
        cmd = [sys.executable, "-m", "emotion", "serve", "--port", str(self.port), "--max-batch-size",
               str(max_batch_size), "--batch-timeout", str(args.batch_timeout), "--workers", str(args.workers),
               "--runtime", args.runtime, "--log-level", "warning", *extra]
        cmd += ["--model", args.model] if args.model else []
        cmd += ["--backend", args.serve_backend] if args.serve_backend else []
        env = dict(os.environ, EMOTION_SERVE_BATCH_LOG=str(self.batch_log))
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=workdir)
        t0 = time.perf_counter()
        while True:
            if self.proc.poll() is not None:
                raise EmotionError(f"the server exited ({self.proc.returncode}): "
                                   + " / ".join(self.log.read_text().strip().splitlines()[-3:]))
            try:
                if httpx.get(self.url + "/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.perf_counter() - t0 > 600:
                self.stop()
                raise EmotionError("the server was not ready in 600 s")
            time.sleep(0.25)
        self.startup_s = time.perf_counter() - t0

    def batches(self) -> list[list[float]]:
        """A row per model call: images, crops, then the worker's decode, face and model milliseconds."""
        text = self.batch_log.read_text() if self.batch_log.exists() else ""
        return [[float(v) for v in line.split()] for line in text.splitlines() if line.strip()]

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.returncode


# ----------------------------------------------------------------------------------------------- load
class RawClient:
    """A lean HTTP/1.1 keep-alive client on asyncio streams, one connection per simulated client: the load
    generator (see --client)."""

    def __init__(self, port: int, key: str | None = None):
        self.port, self.reader, self.writer = port, None, None
        self.auth = f"Authorization: Bearer {key}\r\n".encode() if key else b""

    async def post(self, path: str, body: bytes) -> int:
        try:
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            self.writer.write(b"POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/jpeg\r\n%s"
                              b"Content-Length: %d\r\n\r\n" % (path.encode(), self.auth, len(body)) + body)
            head = await self.reader.readuntil(b"\r\n\r\n")
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), None)
            if length is None:
                raise ValueError("no Content-Length")
            await self.reader.readexactly(length)
            return int(head.split(b" ", 2)[1])
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            self.close()
            return -1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def drive(server: ServerProcess, bodies: list[bytes], path: str, clients: int, seconds: float,
                kind: str = "raw", key: str | None = None) -> dict:
    """``clients`` closed-loop clients posting ``bodies`` in turn to ``path`` for ``seconds``."""
    import httpx  # here: httpx is optional or slow to import

    latencies: list[float] = []
    errors = 0
    peak_rss = 0.0
    start = len(server.batches())
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as shared:
        deadline = time.perf_counter() + seconds

        async def one(k: int) -> None:
            nonlocal errors
            raw = RawClient(server.port, key) if kind == "raw" else None
            i = k
            while time.perf_counter() < deadline:
                body = bodies[i % len(bodies)]
                i += clients
                t0 = time.perf_counter()
                if raw is not None:
                    status = await raw.post(path, body)
                else:
                    try:
                        headers = {"content-type": "image/jpeg", **({"authorization": f"Bearer {key}"} if key
                                                                       else {})}
                        status = (await shared.post(server.url + path, content=body, headers=headers)).status_code
                    except httpx.HTTPError:
                        status = -1
                if status == 200:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1
            if raw is not None:
                raw.close()

        async def sample() -> None:
            nonlocal peak_rss
            while time.perf_counter() < deadline:
                peak_rss = max(peak_rss, tree_rss_mb(server.proc.pid))
                await asyncio.sleep(0.5)

        t0 = time.perf_counter()
        cpu0 = time.process_time()
        await asyncio.gather(sample(), *(one(k) for k in range(clients)))
        elapsed = time.perf_counter() - t0
        client_cpu = time.process_time() - cpu0
    calls = np.array(server.batches()[start:]).reshape(-1, 5)
    sizes, images = calls[:, 0], max(1.0, calls[:, 0].sum())
    stages = {k: round(float(calls[:, i].sum() / images), 2) for i, k in ((2, "decode"), (3, "faces"), (4, "model"))}
    lat = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return {"clients": clients, "requests": len(latencies), "errors": errors, "seconds": round(elapsed, 2),
            "rps": len(latencies) / elapsed, "p50_ms": float(np.percentile(lat, 50)),
            "p95_ms": float(np.percentile(lat, 95)), "p99_ms": float(np.percentile(lat, 99)),
            "mean_batch": float(np.mean(sizes)) if len(sizes) else None,
            "max_batch": int(max(sizes)) if len(sizes) else None, "worker_ms_per_request": stages,
            "rss_mb": round(peak_rss, 1),
            "client_cpu_ms_per_request": round(1000 * client_cpu / max(1, len(latencies)), 2)}


async def key_check(server: ServerProcess, body: bytes, n: int = 1000) -> dict:
    """``n`` requests to the keys server, half without a key and half with a wrong one: how many got 200 (none
    may) and what they got instead."""
    statuses: dict[str, int] = {}
    ok = {"without": 0, "wrong": 0}
    for what, key in (("without", None), ("wrong", BENCH_KEY[:-1] + "x")):
        client = RawClient(server.port, key)
        for _ in range(n // 2):
            status = await client.post("/predict?faces=none", body)
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            ok[what] += status == 200
        client.close()
    return {"requests": n, "answered_200_without_key": ok["without"], "answered_200_wrong_key": ok["wrong"],
            "statuses": statuses}


def run(args, log=print) -> dict:
    try:
        levels = [int(c) for c in str(args.concurrency).split(",") if c.strip()]
    except ValueError:
        raise EmotionError(f"--concurrency takes comma-separated counts, e.g. 1,8,32,64; "
                           f"got {args.concurrency!r}") from None
    if not levels or min(levels) < 1 or args.seconds <= 0 or args.max_batch_size < 2:
        raise EmotionError("--concurrency needs positive counts, --seconds > 0, --max-batch-size >= 2")
    names = [n.strip() for n in str(args.servers).split(",") if n.strip()]
    if "batched" not in names or set(names) - set(SERVERS) or len(set(names)) != len(names):
        raise EmotionError(f"--servers takes batched and any of {', '.join(SERVERS[1:])}, comma-separated; "
                           f"got {args.servers!r}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # photos: the largest face of each classified, as every figure in docs/serving.md was measured
    workloads = {"face crops": (face_crops(args.images), "/predict?faces=none"),
                 "photos": (folder_images(args.data, args.images) if args.data else photos(args.images),
                            "/predict?faces=largest")}
    sizes = {w: int(np.mean([len(b) for b in bodies])) for w, (bodies, _) in workloads.items()}
    rows, servers = [], {}
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        (Path(tmp) / "keys.txt").write_text(BENCH_KEY + "\n")
        for name in names:
            mbs = 1 if name == "unbatched" else args.max_batch_size
            extra = {"no-metrics": ("--no-metrics",), "keys": ("--api-key-file", str(Path(tmp) / "keys.txt"))}
            key = BENCH_KEY if name == "keys" else None
            log(f"starting the {name} server (--max-batch-size {mbs} {' '.join(extra.get(name, ()))})")
            server = ServerProcess(args, mbs, Path(tmp), name, extra.get(name, ()))
            servers[name] = {"max_batch_size": mbs, "startup_s": round(server.startup_s, 1),
                             "idle_rss_mb": round(tree_rss_mb(server.proc.pid), 1)}
            try:
                if key:
                    servers[name]["key_check"] = asyncio.run(key_check(server, workloads["face crops"][0][0]))
                    log(f"keys: {servers[name]['key_check']}")
                for workload, (bodies, path) in workloads.items():
                    asyncio.run(drive(server, bodies, path, 8, args.warmup, args.client, key))  # first calls
                    for c in levels:
                        r = asyncio.run(drive(server, bodies, path, c, args.seconds, args.client, key))
                        rows.append({"server": name, "workload": workload, **r})
                        log(f"{name:9s} {workload:10s} {c:3d} clients: {r['rps']:7.1f} req/s  p50 "
                            f"{r['p50_ms']:6.1f}  p99 {r['p99_ms']:6.1f} ms  errors {r['errors']}  "
                            f"batch {r['mean_batch'] or 0:.1f}  rss {r['rss_mb']:.0f} MB")
            finally:
                servers[name]["exit_code"] = server.stop()
    result = {"command": "emotion serve-bench " + " ".join(sys.argv[sys.argv.index("serve-bench") + 1:])
              if "serve-bench" in sys.argv else "emotion serve-bench",
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                          "load_avg_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None},
              "model": args.model or "happy-sad (shipped)", "backend": args.serve_backend or os.environ.get(
                  "KERAS_BACKEND", "(keras default)"), "runtime": args.runtime, "seconds": args.seconds,
              "batch_timeout": args.batch_timeout, "client": args.client, "workers": args.workers,
              "mean_body_bytes": sizes,
              "photos_from": args.data or "synthetic 640x480, 1-3 faces of 90-200 px",
              "servers": servers, "rows": rows}
    result["targets"] = targets(rows)
    write_atomic(out / "serve-bench.json", json.dumps(result, indent=1))
    write_atomic(out / "serve-bench.md", markdown(result))
    plot(rows, out / "serve-bench.png")
    return result


def _row(rows, server, workload, clients):
    return next((r for r in rows if (r["server"], r["workload"], r["clients"]) == (server, workload, clients)), None)


def targets(rows) -> dict:
    """The issue's targets, at 32 clients on face crops: batched >= 3x the unbatched requests/s; p99 <= 100 ms."""
    b, u = _row(rows, "batched", "face crops", 32), _row(rows, "unbatched", "face crops", 32)
    out: dict = {}
    if b and u:
        speedup = b["rps"] / u["rps"] if u["rps"] else None
        out = {"crops_speedup_at_32": speedup, "speedup_met": bool(speedup and speedup >= 3),
               "crops_p99_ms_at_32": b["p99_ms"], "p99_met": b["p99_ms"] <= 100}
    off = _row(rows, "no-metrics", "face crops", 32)
    if b and off and off["rps"]:
        out["metrics_cost_at_32"] = 1 - b["rps"] / off["rps"]  # the share of req/s that /metrics costs
        out["metrics_met"] = out["metrics_cost_at_32"] <= 0.03
    return out


def markdown(result) -> str:
    m = result["machine"]
    lines = [
        "# emotion serve-bench", "",
        f"`{result['command']}`, {result['date']}: {m['cpus']} CPUs ({m['platform']}, Python {m['python']}), "
        f"load average at the end {tuple(round(x, 1) for x in m['load_avg_at_end'] or ())}. "
        f"Model {result['model']}, backend {result['backend']}, runtime {result['runtime']}, "
        f"{result['workers']} inference worker(s); {result['seconds']} s per level; batched server: "
        f"--max-batch-size {result['servers']['batched']['max_batch_size']} --batch-timeout "
        f"{result['batch_timeout']}; unbatched: --max-batch-size 1. Mean request body: "
        + ", ".join(f"{w} {b / 1000:.1f} kB" for w, b in result["mean_body_bytes"].items())
        + "; crops are posted to /predict?faces=none (no detection), photos to /predict?faces=largest (faces "
        f"found, the largest classified); "
        f"photos: {result['photos_from']}. The client ({result['client']}) runs on the same CPUs.", "",
        "| workload | server | clients | req/s | p50 ms | p95 ms | p99 ms | errors | images/model call "
        "| worker ms/request: decode / faces / model | server RSS MB |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in result["rows"]:
        batch = f"{r['mean_batch']:.1f}" if r["mean_batch"] is not None else "-"
        w = r["worker_ms_per_request"]
        lines.append(f"| {r['workload']} | {r['server']} | {r['clients']} | {r['rps']:.1f} | {r['p50_ms']:.1f} "
                     f"| {r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} | {batch} "
                     f"| {w['decode']:.1f} / {w['faces']:.1f} / {w['model']:.1f} | {r['rss_mb']:.0f} |")
    lines += ["", "Worker ms/request: the inference worker's wall time per request, from its batch log: decoding the "
                  "image, finding and cropping its faces (a batch's images in threads; crops are only resized) and the "
                  "model call (one per batch, its time shared by the batch's requests). The rest of a request's "
                  "latency is HTTP, LitServe's queues and waiting for the worker."]
    t = result["targets"]
    if "crops_speedup_at_32" in t:
        lines += ["", f"Targets (face crops, 32 clients): batched/unbatched requests/s = "
                      f"{t['crops_speedup_at_32']:.2f}x (target >= 3x: {'met' if t['speedup_met'] else 'NOT met'}); "
                      f"batched p99 {t['crops_p99_ms_at_32']:.0f} ms (target <= 100 ms: "
                      f"{'met' if t['p99_met'] else 'NOT met'})."]
    if t.get("metrics_cost_at_32") is not None:
        cost = t["metrics_cost_at_32"]
        lines += ["", f"Metrics (face crops, 32 clients): batched with /metrics {abs(cost):.1%} requests/s "
                      f"{'below' if cost > 0 else 'above'} the same server with --no-metrics (target within 3%: "
                      f"{'met' if t['metrics_met'] else 'NOT met'})."]
    check = result["servers"].get("keys", {}).get("key_check")
    if check:
        lines += ["", f"Keys: of {check['requests']} requests without a key or with a wrong one, "
                      f"{check['answered_200_without_key'] + check['answered_200_wrong_key']} answered 200 "
                      f"(statuses {check['statuses']})."]
    s = result["servers"]
    lines += ["", "Servers: " + "; ".join(f"{k}: ready in {v['startup_s']} s, idle RSS {v['idle_rss_mb']:.0f} MB, "
                                          f"exit code {v.get('exit_code')} after SIGTERM" for k, v in s.items()), ""]
    return "\n".join(lines)


def plot(rows, path: Path) -> None:
    import matplotlib  # here: matplotlib is optional or slow to import

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # here: matplotlib is optional or slow to import

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for workload, marker in (("face crops", "o"), ("photos", "s")):
        for server, style in (("batched", "-"), ("unbatched", "--"), ("no-metrics", ":"), ("keys", "-.")):
            part = [r for r in rows if r["workload"] == workload and r["server"] == server]
            if not part:
                continue
            x = [r["clients"] for r in part]
            label = f"{workload}, {server}"
            axes[0].plot(x, [r["rps"] for r in part], style, marker=marker, label=label)
            axes[1].plot(x, [r["p99_ms"] for r in part], style, marker=marker, label=label)
    levels = sorted({r["clients"] for r in rows})
    for ax, title in zip(axes, ("requests/s", "p99 latency (ms)"), strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [str(c) for c in levels])
        ax.set_xlabel("concurrent clients")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def command(args) -> int:
    for module in ("litserve", "httpx"):
        if importlib.util.find_spec(module) is None:
            raise EmotionError(f"emotion serve-bench needs {module}: pip install -e '.[serve]'")
    run(args, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    print((Path(args.out) / "serve-bench.md").read_text(), end="")
    return 0
