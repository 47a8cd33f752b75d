"""The page of `emotion serve` at ``GET /``: a photo (chosen or dropped) or the live camera sent to /predict,
every face's box and label drawn over it, a table of the faces with every class's probability. The HTML, its
script and its style ship in the package (emotion/serve/static/): nothing is fetched from elsewhere.

    add_page(server.app)                                   # GET /, GET /static/app.js, GET /static/style.css
"""

from __future__ import annotations

from importlib import resources

from fastapi import HTTPException
from fastapi.responses import Response

TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8"}
# the page may load only its own files, and talk only to this server
POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
          "media-src 'self' blob: mediastream:; connect-src 'self'; base-uri 'none'; form-action 'none'")


def files() -> dict[str, tuple[bytes, str]]:
    """The page's files, read once: name -> (bytes, content type)."""
    folder = resources.files("emotion.serve") / "static"
    return {f.name: (f.read_bytes(), TYPES[f.name[f.name.rfind("."):]]) for f in folder.iterdir()
            if f.name[f.name.rfind("."):] in TYPES}


def add_page(app) -> None:
    """Replace LitServe's "litserve running" at / with the page, and serve its files under /static/."""
    page = files()
    headers = {"Content-Security-Policy": POLICY, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}
    app.router.routes = [r for r in app.router.routes if getattr(r, "path", None) != "/"]

    async def index():
        body, ctype = page["index.html"]
        return Response(body, media_type=ctype, headers=headers)

    async def static(name: str):
        if name not in page or name == "index.html":
            raise HTTPException(404, f"no such file: {name[:60]}")
        body, ctype = page[name]
        return Response(body, media_type=ctype, headers=headers)

    app.add_api_route("/", index, methods=["GET"], include_in_schema=False)
    app.add_api_route("/static/{name}", static, methods=["GET"], include_in_schema=False)
