"""The page at `GET /`, in a real browser: Debian's headless Chromium driven by Playwright's Python API (no browser
download), on a server running a tiny eight-class face model behind an API key. It uploads a drawn face and
reads the label from #results, sends a file that is not an image, runs the camera path with Chromium's fake
camera fed from a y4m clip of a face (reading a label and #fps), is refused the camera, and finds the server gone.
Skipped, saying why, where Playwright or Chromium is missing (`.ci/run` installs Chromium)."""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
import time

import numpy as np
import pytest
from conftest import BACKEND, tiny_face_model
from PIL import Image
from servers import NEEDS, NEEDS_REASON, Server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CLASSES = ["angry", "contempt", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
KEY = "page-test-key-0001"
pytestmark = [
    pytest.mark.once,  # the page does not depend on the backend: run under the first one only
    pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in NEEDS), reason=NEEDS_REASON),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None,
                       reason="playwright (the Python package, in emotion[dev]) is not installed"),
    pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK),
                       reason=f"no Chromium at {CHROMIUM}: apt-get install chromium (.ci/run does)"),
]
FAKE_CAMERA = ["--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]


def scene(seed: int = 0, w: int = 640, h: int = 480) -> np.ndarray:
    """A grey scene with one large drawn face (RGB)."""
    from emotion.data.synth import face

    rng = np.random.default_rng(seed)
    canvas = np.full((h, w, 3), 110, np.uint8)
    canvas[100:340, 200:440] = np.asarray(face(0, rng, size=240))
    return canvas


def write_y4m(path, frames: int = 30) -> None:
    """A YUV4MPEG2 clip (what Chromium's fake camera reads): I420 frames of the face scene, drifting a little."""
    import cv2

    with open(path, "wb") as f:
        f.write(b"YUV4MPEG2 W640 H480 F15:1 Ip A1:1 C420jpeg\n")
        base = cv2.cvtColor(scene(), cv2.COLOR_RGB2BGR)
        for i in range(frames):
            frame = np.roll(base, (i % 10) - 5, axis=1)
            f.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("page")
    model = tiny_face_model(tmp / "eight.keras", CLASSES)
    (tmp / "keys.txt").write_text(KEY + "\n")
    write_y4m(tmp / "clip.y4m")
    for name, seed in (("face.png", 1), ("face2.png", 2)):
        photo = io.BytesIO()
        Image.fromarray(scene(seed)).save(photo, format="PNG")
        (tmp / name).write_bytes(photo.getvalue())
    (tmp / "notes.txt").write_text("this is not an image\n" * 20)
    server = Server(tmp, "--api-key-file", "keys.txt", env={"KERAS_BACKEND": BACKEND},
                    runtime=("--model", str(model)))
    try:
        yield server, tmp
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser(site):
    from playwright.sync_api import sync_playwright

    _, tmp = site
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM,
                              args=[*FAKE_CAMERA, f"--use-file-for-fake-video-capture={tmp / 'clip.y4m'}"])
        try:
            yield p, b
        finally:
            b.close()


def new_page(browser):
    """A tab whose Content-Security-Policy lets Playwright evaluate its probes (the page itself allows no eval)."""
    return browser.new_context(bypass_csp=True).new_page()


def rows(page) -> list[list[str]]:
    return page.eval_on_selector_all("#results tr", "trs => trs.map(tr => [...tr.cells].map(c => c.textContent))")


def test_photo_then_camera(site, browser):
    server, tmp = site
    page = new_page(browser[1])
    page.goto(server.url + "/")
    page.set_input_files("#photo", str(tmp / "face.png"))
    page.wait_for_selector("#key", state="visible", timeout=30_000)  # the server wants a key: asked once
    page.fill("#key", KEY)
    page.click("#keyform button")
    page.wait_for_function("document.querySelectorAll('#results tr').length > 0", timeout=60_000)
    got = rows(page)
    assert len(got) == 1 and got[0][1] in CLASSES, got
    page.wait_for_function("document.querySelector('#model').textContent.includes('eight.keras')", timeout=10_000)
    head = page.eval_on_selector_all("#head th", "ths => ths.map(th => th.textContent)")
    assert head == ["face", "label", *CLASSES], head
    assert abs(sum(float(v) for v in got[0][2:]) - 1) < 0.01, "every class's probability, summing to 1"
    page.evaluate("delete document.body.dataset.answerMs")  # a second photo, the key known: answered and drawn
    t0 = time.monotonic()
    page.set_input_files("#photo", str(tmp / "face2.png"))  # (another file: the same one fires no change)
    page.wait_for_function("document.body.dataset.answerMs !== undefined", timeout=30_000)
    ms = float(page.evaluate("document.body.dataset.answerMs"))
    print(f"photo answered and drawn in {ms:.0f} ms ({1000 * (time.monotonic() - t0):.0f} ms seen by the test)")
    assert 0 < ms < 10_000
    assert page.is_hidden("#keyform"), "the key is asked once"

    page.set_input_files("#photo", str(tmp / "notes.txt"))
    page.wait_for_function("document.querySelector('#message').textContent.includes('not an image')",
                           timeout=30_000)
    assert page.get_attribute("#message", "class") == "error"

    page.click("#camera")
    page.wait_for_function("Number(document.querySelector('#fps').dataset.fps || 0) > 0", timeout=60_000)
    time.sleep(3)  # a few seconds of frames
    fps = float(page.get_attribute("#fps", "data-fps"))
    text = page.text_content("#fps")
    got = rows(page)
    assert got and got[0][1] in CLASSES and text.endswith("frames/s"), (got, text)
    print(f"camera: {fps:.1f} frames/s answered (this machine, while the test suite runs)")
    assert fps > 0.5
    page.click("#camera")  # stops
    assert page.text_content("#fps") == ""
    page.close()


def test_camera_refused(site, browser):
    server, _ = site
    b = browser[0].chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--use-fake-device-for-media-stream",
                                                                  "--deny-permission-prompts"])
    try:
        page = new_page(b)
        page.goto(server.url + "/")
        page.click("#camera")
        page.wait_for_function("document.querySelector('#message').className === 'error'", timeout=30_000)
        assert "camera was refused" in page.text_content("#message"), page.text_content("#message")
    finally:
        b.close()


def test_server_gone(site, browser):
    """Last: it stops the module's server."""
    server, tmp = site
    page = new_page(browser[1])
    page.goto(server.url + "/")
    server.stop()
    page.set_input_files("#photo", str(tmp / "face.png"))
    page.wait_for_function("document.querySelector('#message').textContent.includes('cannot be reached')",
                           timeout=30_000)
    page.close()
