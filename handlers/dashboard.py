"""The browser dashboard: static files at `/`, and the Socket.IO browser client.

The page (web/index.html, its ES modules and stylesheet) talks the public protocol only:
REST under /api and Socket.IO events. Its one third-party file, the official
socket.io-client ESM build, is installed by `npm ci` in web/ (scripts/serve and
scripts/test do it) and served from web/node_modules; nothing third-party is committed.
When it is not installed the server still starts: /vendor/... answers 404 and the page
says that live updates are unavailable.

Only named files are served (a fixed list plus top-level `*.js`/`*.css`/`*.svg` of the
dashboard folder), so no request path is ever joined onto the file system.
`Cache-Control: no-cache`: the names carry no content hash, so a browser revalidates
every file (aiohttp answers 304 from the ETag / Last-Modified) and a deploy is seen at once.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from realtime import keys
from realtime.errors import ApiError

# The source tree's web/ folder (an editable install or a checkout); the setting
# http.dashboard_dir points elsewhere.
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "web"
# Top-level files of the folder with these suffixes; matched by the route itself, so that
# routes registered later (/metrics, say) are never shadowed.
ASSET_ROUTE = r"/{name:[a-z0-9][a-z0-9_-]*\.(?:js|css|svg)}"
MAX_ASSET_NAME = 64
CONTENT_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".map": "application/json",
}
# The page's own policy (defence in depth; a server-wide header middleware may set the
# same): scripts, styles and connections from this origin only, no inline code.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
    "style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
CLIENT_DIST = Path("node_modules", "socket.io-client", "dist")
VENDOR_FILES = {
    "socket.io.esm.min.js": CLIENT_DIST / "socket.io.esm.min.js",
    "socket.io.esm.min.js.map": CLIENT_DIST / "socket.io.esm.min.js.map",
}
DASHBOARD_DIR = web.AppKey("dashboard_dir", Path)


def setup(app: web.Application) -> None:
    configured = app[keys.CONFIG].dashboard_dir
    app[DASHBOARD_DIR] = Path(configured) if configured else DEFAULT_DIR
    # Named, so that the OpenAPI completeness test can tell these files from the REST API.
    app.router.add_get("/", index, name="dashboard-index")
    app.router.add_get("/vendor/{name}", vendor, name="dashboard-vendor")
    app.router.add_get(ASSET_ROUTE, asset, name="dashboard-asset")


def _file_response(path: Path, missing: str) -> web.FileResponse:
    if not path.is_file():
        raise ApiError("not_found", missing)
    return web.FileResponse(path, headers={
        "Cache-Control": "no-cache",
        "Content-Type": CONTENT_TYPES.get(path.suffix, "application/octet-stream"),
    })


async def index(request: web.Request) -> web.FileResponse:
    response = _file_response(request.app[DASHBOARD_DIR] / "index.html",
                              "the dashboard files are not installed on this server")
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


async def asset(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    if len(name) > MAX_ASSET_NAME:
        raise ApiError("not_found", "no such file")
    return _file_response(request.app[DASHBOARD_DIR] / name, "no such file")


async def vendor(request: web.Request) -> web.FileResponse:
    relative = VENDOR_FILES.get(request.match_info["name"])
    if relative is None:
        raise ApiError("not_found", "no such file")
    return _file_response(
        request.app[DASHBOARD_DIR] / relative,
        "the Socket.IO browser client is not installed: run `npm ci` in web/ "
        "(./scripts/serve does it when npm is available)")
