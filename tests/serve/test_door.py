"""The door of `emotion serve` (issue 28): API keys, CORS and /metrics, over real HTTP on loopback with the
shipped model under onnxruntime; the key file's rules without a server."""

from __future__ import annotations

import importlib.util
import re
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from servers import NEEDS, NEEDS_REASON, Server, photo_jpeg

from emotion.errors import EmotionError

pytestmark = [pytest.mark.once,
              pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in NEEDS), reason=NEEDS_REASON)]
KEY = "s3cret-key-for-tests-0001"
ORIGIN = "http://app.example:3000"


def test_keys_are_read_and_compared(tmp_path):
    from emotion.serve.keys import allowed, read_keys

    f = tmp_path / "keys.txt"
    f.write_text("# ops keys\n\nfirst-key-123\n  second-key-456  \n")
    keys = read_keys(str(f), environ={"EMOTION_API_KEYS": "third-key-789, first-key-123"})
    assert keys == (b"first-key-123", b"second-key-456", b"third-key-789")
    assert allowed(keys, b"Bearer second-key-456") and allowed(keys, b"bearer third-key-789")
    for bad in (None, b"", b"second-key-456", b"Bearer second-key-45", b"Bearer second-key-4567", b"Basic x",
                b"Bearer "):
        assert not allowed(keys, bad), bad
    assert read_keys(None, environ={}) == ()
    (tmp_path / "empty").write_text("# nothing\n")
    for path, env, words in ((tmp_path / "none.txt", {}, "cannot read"), (tmp_path / "empty", {}, "holds no key"),
                             (None, {"EMOTION_API_KEYS": "short"}, "EMOTION_API_KEYS key 1")):
        with pytest.raises(EmotionError, match=words) as e:
            read_keys(str(path) if path else None, environ=env)
        assert "short" not in str(e.value), "a key is never shown"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("door")
    (tmp / "keys.txt").write_text(f"{KEY}\n")
    s = Server(tmp, "--api-key-file", "keys.txt", "--cors-origin", ORIGIN, "--max-batch-size", "8")
    yield s
    s.stop()


def auth(key: str = KEY) -> dict:
    return {"authorization": f"Bearer {key}"}


def test_keys_close_the_door(server):
    """0 of 400 requests without a key or with a wrong one answered 200; every one with the key answered."""
    import httpx

    body = photo_jpeg(1)
    headers = [{}, auth("wrong-key-000000000"), auth(KEY[:-1]), {"authorization": KEY}]

    def post(i):
        h = {"content-type": "image/jpeg", **headers[i % len(headers)]}
        return httpx.post(server.url + "/predict", content=body, headers=h, timeout=60)

    with ThreadPoolExecutor(16) as pool:
        refused = list(pool.map(post, range(400)))
    assert [r.status_code for r in refused] == [401] * 400
    assert all(r.json()["detail"] and "\n" not in r.json()["detail"] for r in refused)
    assert refused[0].headers["www-authenticate"] == "Bearer"
    with ThreadPoolExecutor(8) as pool:
        ok = list(pool.map(lambda _: httpx.post(server.url + "/predict", content=body, timeout=60,
                                                headers={"content-type": "image/jpeg", **auth()}), range(40)))
    assert [r.status_code for r in ok] == [200] * 40
    assert httpx.get(server.url + "/health").status_code == 200, "/health stays open"
    assert httpx.get(server.url + "/").status_code == 200, "the page asks for the key itself"
    for path in ("/metrics", "/info", "/openapi.json"):
        assert httpx.get(server.url + path).status_code == 401, path
        assert httpx.get(server.url + path, headers=auth()).status_code == 200, path
    log = server.log.read_text()
    assert KEY not in log and KEY[:-1] not in log
    assert "1 API key(s)" in log and "127.0.0.1" in log
    assert KEY not in httpx.get(server.url + "/metrics", headers=auth()).text


def test_cross_origin_requests(server):
    import httpx

    r = httpx.get(server.url + "/info", headers={**auth(), "origin": "http://evil.example"})
    assert r.status_code == 403 and "--cors-origin http://evil.example" in r.json()["detail"]
    r = httpx.get(server.url + "/info", headers={**auth(), "origin": ORIGIN})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ORIGIN
    r = httpx.options(server.url + "/predict", headers={"origin": ORIGIN, "access-control-request-method": "POST",
                                                        "access-control-request-headers": "authorization"})
    assert r.status_code == 204 and "Authorization" in r.headers["access-control-allow-headers"]
    same = httpx.get(server.url + "/info", headers={**auth(), "origin": server.url})
    assert same.status_code == 200 and "access-control-allow-origin" not in same.headers


def scrape(server) -> dict[str, float]:
    import httpx

    r = httpx.get(server.url + "/metrics", headers=auth())
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out = {}
    for line in r.text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_metrics_count_what_happened(server):
    import httpx

    before = scrape(server)
    body = photo_jpeg(2)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: httpx.post(server.url + "/predict", content=body, timeout=60,
                                                     headers={"content-type": "image/jpeg", **auth()}), range(24)))
    assert [r.status_code for r in answers] == [200] * 24
    faces = sum(row["face"] is not None for r in answers for row in r.json())
    bad = httpx.post(server.url + "/predict", content=b"not an image at all", timeout=60,
                     headers={"content-type": "image/jpeg", **auth()})
    assert bad.status_code == 400
    after = scrape(server)

    def grew(name):
        return after.get(name, 0) - before.get(name, 0)

    assert grew('emotion_requests_total{code="200",path="/predict"}') == 24
    assert grew('emotion_requests_total{code="400",path="/predict"}') == 1
    assert grew('emotion_request_seconds_count{path="/predict"}') == 25
    assert grew('emotion_images_rejected_total{reason="not_image"}') == 1
    assert grew("emotion_faces_per_request_count") == 24 and grew("emotion_faces_per_request_sum") == faces
    assert grew("emotion_batch_images_sum") == 24, "every image in exactly one model call"
    assert 1 <= grew("emotion_batch_images_count") <= 24 and grew("emotion_model_call_seconds_count") >= 1
    assert grew("emotion_model_call_seconds_sum") > 0
    info = next(k for k in after if k.startswith("emotion_model_info{"))
    assert re.search(r'classes="happy,sad"', info) and 'runtime="onnx"' in info and 'version="' in info


def test_without_keys_it_says_so_and_metrics_can_be_off(tmp_path):
    import httpx

    s = Server(tmp_path, "--no-metrics")
    try:
        assert httpx.get(s.url + "/metrics").status_code == 404
        assert httpx.get(s.url + "/info").status_code == 200, "no keys: open (on loopback)"
    finally:
        s.stop()
    line = next(x for x in s.log.read_text().splitlines() if x.startswith("emotion serve:"))
    assert "127.0.0.1" in line and "without API keys" in line and "cross-origin requests refused" in line


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
