"""What every HTTP answer gets on its way out, and what every API request passes first.

- `policy_middleware` (outermost, so it also sees error answers): security headers
  (helmet's set that applies to an API and a same-origin dashboard page), CORS for
  `/api/` from `FRONTEND_URL`, and gzip/deflate for large REST answers.
- `rate_limit_middleware` (inside the error middleware, so a 429 carries the request
  id): the REST budgets of realtime/ratelimit.py, one limiter call per request.

The Socket.IO endpoint keeps its own CORS (python-engineio, fed the same origins by
realtime/sockets.py) and is never compressed here (engine.io compresses its long-poll
answers itself; websocket frames are never compressed, see docs/protocol.md).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.web_response import ContentCoding

from realtime import keys
from realtime.auth import AuthService, bearer_token
from realtime.config import Config
from realtime.errors import ApiError
from realtime.ratelimit import client_address, retry_after

from .middleware import Handler, error_response

try:  # ISA-L: the same formats as zlib at ~a quarter of its CPU (a 25 kB list: 30 vs 130 us)
    from isal import isal_zlib as zlib
except ImportError:  # pragma: no cover - platforms without an isal wheel
    import zlib  # type: ignore[no-redef]

# helmet's defaults, minus what only concerns HTML forms of other sites. The page at `/`
# loads its script and styles as files from this origin and opens its websocket to this
# origin ('self' covers ws: and wss: of the same host in CSP Level 3 browsers).
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = (
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    ("Origin-Agent-Cluster", "?1"),
    ("X-Permitted-Cross-Domain-Policies", "none"),
    ("X-DNS-Prefetch-Control", "off"),
)
SERVER = "TaskMaster"  # instead of aiohttp's name and version
API = "/api/"
SOCKETS = "/socket.io/"
CORS_METHODS = "GET, POST, PATCH, DELETE"
CORS_HEADERS = "Authorization, Content-Type, If-Match, X-Mutation-Id, X-Request-Id"
CORS_EXPOSE = "ETag, Location, Retry-After, X-Request-Id"
CORS_MAX_AGE = "600"
COMPRESS_LEVEL = 1  # fast (ISA-L's 1 of 0-3, or zlib's 1 of 1-9): JSON still shrinks ~4x
# Probes and the document are not rate limited: a balancer polls them from one address.
UNLIMITED = frozenset({"/api/health", "/api/ready", "/api/openapi.json"})
AUTH_ROUTES = frozenset({"/api/auth/login", "/api/auth/register"})
BENCH_PREFIX = "/api/_bench/"  # benchmark-only control routes (never in production)


class HttpPolicy:
    """The per-app values the middlewares need, computed once."""

    def __init__(self, config: Config) -> None:
        self.origins = frozenset(config.allowed_origins)
        self.any_origin = "*" in self.origins
        self.compress_min = config.compress_min_bytes
        headers = list(SECURITY_HEADERS)
        if config.hsts_max_age:
            headers.append(("Strict-Transport-Security",
                            f"max-age={config.hsts_max_age}; includeSubDomains"))
        self.headers = tuple(headers)

    def origin_allowed(self, request: web.BaseRequest, origin: str) -> bool:
        """FRONTEND_URL's origins, and the server's own (its dashboard page)."""
        normalized = origin.lower()
        if self.any_origin or normalized in self.origins:
            return True
        return _same_origin(request, normalized)


def _same_origin(request: web.BaseRequest, origin: str) -> bool:
    parts = urlsplit(origin)
    return parts.scheme in {"http", "https"} and bool(parts.netloc) and \
        parts.netloc == request.host.lower()


POLICY = web.AppKey("http_policy", HttpPolicy)


@web.middleware
async def policy_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    policy = request.app[POLICY]
    path = request.path
    origin = request.headers.get("Origin")
    api = path.startswith(API)
    if api and origin is not None and request.method == "OPTIONS" and \
            "Access-Control-Request-Method" in request.headers:
        response: web.StreamResponse = _preflight(request, policy, origin)
    else:
        response = await handler(request)
        if api and origin is not None and policy.origin_allowed(request, origin):
            headers = response.headers
            headers["Access-Control-Allow-Origin"] = origin
            headers["Access-Control-Expose-Headers"] = CORS_EXPOSE
    headers = response.headers
    for name, value in policy.headers:
        headers.setdefault(name, value)
    headers["Server"] = SERVER
    if api:
        headers.add("Vary", "Origin")
    if policy.compress_min and not path.startswith(SOCKETS):
        _maybe_compress(request, response, policy.compress_min)
    return response


def _preflight(request: web.Request, policy: HttpPolicy, origin: str) -> web.Response:
    if not policy.origin_allowed(request, origin):
        # No CORS headers: the browser refuses the real request.
        return error_response("forbidden", "this origin may not call the API", 403)
    return web.Response(status=204, headers={
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": CORS_METHODS,
        "Access-Control-Allow-Headers": CORS_HEADERS,
        "Access-Control-Max-Age": CORS_MAX_AGE,
    })


def _maybe_compress(request: web.Request, response: web.StreamResponse, minimum: int) -> None:
    if type(response) is not web.Response or response.prepared:
        return  # websockets, streams and already-sent answers stay as they are
    body = response.body
    if not isinstance(body, bytes) or len(body) < minimum or \
            "Content-Encoding" in response.headers:
        return
    coding = _accepted_coding(request.headers.get("Accept-Encoding", ""))
    response.headers.add("Vary", "Accept-Encoding")
    if coding is not None:
        # Here, at level 1, rather than aiohttp's enable_compression: zlib level 6 in an
        # executor thread cost ~1 ms of CPU and a thread hop per list answer, for a few
        # percent of size on JSON (measured on the REST benchmark's list answers).
        wbits = 16 + zlib.MAX_WBITS if coding is ContentCoding.gzip else zlib.MAX_WBITS
        packer = zlib.compressobj(COMPRESS_LEVEL, zlib.DEFLATED, wbits)
        response.body = packer.compress(body) + packer.flush()
        response.headers["Content-Encoding"] = coding.value


def _accepted_coding(header: str) -> ContentCoding | None:
    """gzip, else deflate, if the client accepts it (a `;q=0` refuses)."""
    accepted = set()
    for item in header.lower().split(","):
        name, _, params = item.partition(";")
        quality = params.strip()
        if quality.startswith("q=") and quality[2:].strip() in {"0", "0.0", "0.00", "0.000"}:
            continue
        accepted.add(name.strip())
    if "gzip" in accepted:
        return ContentCoding.gzip
    if "deflate" in accepted:
        return ContentCoding.deflate
    return None


@web.middleware
async def rate_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    path = request.path
    if not path.startswith(API) or path in UNLIMITED or path.startswith(BENCH_PREFIX):
        return await handler(request)
    app = request.app
    limits = app[keys.RATE_LIMITS]
    address = client_address(request, limits.trusted)
    user_id = _user_of(request, app[keys.AUTH]) if limits.user is not None else None
    auth_route = request.method == "POST" and path in AUTH_ROUTES
    wait = await limits.request(address, user_id, auth_route)
    if wait > 0:
        seconds = retry_after(wait)
        return error_response(
            "rate_limited", f"too many requests; retry in {seconds} s", 429,
            {"retry_after": seconds}, headers={"Retry-After": str(seconds)})
    return await handler(request)


def _user_of(request: web.Request, auth: AuthService) -> str | None:
    """The user a request's bearer token speaks for, if the token verifies (the
    handler still checks it fully; a verified token is cached, so this costs a
    dict lookup). An unverified `sub` is never used: anyone could spend another
    user's budget with a forged one."""
    try:
        token = bearer_token(request.headers.get("Authorization"))
        return auth.decode(token).user_id if token else None
    except ApiError:
        return None
