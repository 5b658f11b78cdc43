"""`overnight serve`: a read-only live dashboard (FastAPI + uvicorn, both imported lazily).

Security model: the server never writes anything. Bound to a loopback address it needs no
token but answers only requests whose Host is a loopback name, so a web page in the user's
browser cannot reach it through DNS rebinding. Bound to any other address it requires a
token on every request: `Authorization: Bearer <token>`, `?token=<token>` (which also sets
an HttpOnly cookie so links and the page's own polling keep working), or that cookie.

Concurrency: each request opens its own read-only SQLite connection and closes it before
answering. The ledger is in WAL mode, so readers never block the controller's writes.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from overnight import jsonout
from overnight.errors import UsageError
from overnight.report import queries
from overnight.store.ledger import Ledger

if TYPE_CHECKING:
    from fastapi import FastAPI

    from overnight.store.study import Study

COOKIE = "overnight_token"
FILE_CAP = 2_000_000  # bytes of one file the file view returns (logs can be huge)
LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    """Whether binding to `host` keeps the server reachable from this machine only."""
    host = host.strip().strip("[]")
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a hostname may resolve anywhere: treat it as exposed


def _host_name(header: str) -> str:
    """The hostname of a Host header, without the port ("[::1]:8765" → "::1")."""
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def controller(study: Study) -> dict[str, Any]:
    """Whether an `overnight run` holds the study. Reads the pid the lock file records; it
    never takes the lock itself, which could make a starting run fail."""
    import psutil

    path = study.state_dir / "run.lock"
    try:
        pid = int(path.read_text().strip() or 0)
    except (OSError, ValueError):
        pid = 0
    alive = False
    if pid > 0:
        try:
            proc = psutil.Process(pid)
            alive = proc.is_running() and "overnight" in " ".join(proc.cmdline())
        except (psutil.Error, OSError):
            alive = False
    return {"pid": pid or None, "alive": alive}


def create_app(study: Study, token: str | None = None) -> FastAPI:
    """The dashboard app. `token` None means no token (only sane on loopback)."""
    from fastapi import FastAPI, HTTPException, Query, Request
    from fastapi.responses import HTMLResponse, PlainTextResponse, Response

    from overnight.report import pages

    app = FastAPI(title=f"overnight · {study.name}", docs_url=None, redoc_url=None,
                  openapi_url=None)  # fmt: skip

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        if request.method not in ("GET", "HEAD"):
            return PlainTextResponse("read-only dashboard\n", status_code=405)
        via_query = False
        if token is None:
            host = _host_name(request.headers.get("host", ""))
            if not is_loopback(host) and not host.startswith("127."):
                return PlainTextResponse("forbidden host\n", status_code=403)
        else:
            given = ""
            auth = request.headers.get("authorization", "")
            if auth.lower().startswith("bearer "):
                given = auth[7:].strip()
            elif request.query_params.get("token"):
                given, via_query = request.query_params["token"], True
            else:
                given = request.cookies.get(COOKIE, "")
            if not given:
                return PlainTextResponse(
                    "token required: open the URL printed by `overnight serve`\n",
                    status_code=401, headers={"WWW-Authenticate": "Bearer"},
                )  # fmt: skip
            if not hmac.compare_digest(given.encode(), token.encode()):
                return PlainTextResponse("wrong token\n", status_code=403)
        response = await call_next(request)
        if via_query:
            response.set_cookie(COOKIE, token or "", httponly=True, samesite="strict")
        # Pages embed logs and diffs: never let another site frame them.
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"  # logs stay text
        response.headers["Cache-Control"] = "no-store"
        return response

    @contextmanager
    def reading() -> Iterator[Ledger | None]:
        ledger = queries.open_ledger(study)
        try:
            yield ledger
        finally:
            if ledger is not None:
                ledger.close()

    def as_json(data: Any, checked: bool = False) -> Response:
        # `checked`: the payload holds only finite floats already (the chart's 100k points
        # would spend most of their time copying).
        body = jsonout.dumps(data, checked=checked, separators=(",", ":"))
        return Response(body, media_type="application/json")

    def not_started() -> dict[str, Any]:
        metric = {"name": study.cfg.metric.name, "goal": study.cfg.metric.goal}
        return {"study": study.name, "started": False, "metric": metric}

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return pages.dashboard(study)

    @app.get("/api/status")
    def api_status() -> Response:
        with reading() as ledger:
            if ledger is None:
                return as_json(not_started())
            st = queries.summary(study, ledger)
        st["started"] = True
        st["controller"] = controller(study)
        return as_json(st)

    @app.get("/api/points")
    def api_points(since: int = -1, after: float | None = None) -> Response:
        with reading() as ledger:
            if ledger is None:
                return as_json({"n": [], "v": [], "s": "", "labels": {}, "cursor": None})
            return as_json(queries.points(ledger, since, after), checked=True)

    @app.get("/api/experiments")
    def api_experiments(
        offset: int = Query(0, ge=0), limit: int = Query(50, ge=1, le=500),
        status: str = "", q: str = "", order: str = "desc",
    ) -> Response:  # fmt: skip
        statuses = [s for s in status.split(",") if s] or None
        with reading() as ledger:
            if ledger is None:
                return as_json({"total": 0, "offset": 0, "rows": []})
            data = queries.page(ledger, offset, limit, statuses, q or None, order != "asc")
        return as_json(data)

    def load(n: int) -> dict[str, Any]:
        with reading() as ledger:
            info = None if ledger is None else queries.experiment(study, ledger, n)
        if info is None:
            raise HTTPException(404, f"no experiment {n}")
        info["files"] = queries.exp_files(study.exp_dir(n))
        return info

    @app.get("/api/experiments/{n}")
    def api_experiment(n: int) -> Response:
        return as_json(load(n))

    @app.get("/experiments/{n}", response_class=HTMLResponse)
    def experiment_page(n: int) -> str:
        return pages.experiment(study, load(n))

    @app.get("/experiments/{n}/files/{rel:path}")
    def experiment_file(n: int, rel: str) -> Response:
        path = queries.safe_child(study.exp_dir(n), rel)
        if path is None:
            raise HTTPException(404, "no such file")
        text, cut = queries.read_head(path, FILE_CAP)
        if cut:
            text += f"\n… cut at {FILE_CAP} bytes ({path.stat().st_size} in all)\n"
        return PlainTextResponse(text)

    return app


def resolve_token(host: str, token: str | None) -> tuple[str | None, bool]:
    """The token to require and whether it was generated here (and must be printed)."""
    if token is not None and not token.strip():
        raise UsageError("--token: expected a non-empty token")
    if token:
        return token, False
    if is_loopback(host):
        return None, False
    return secrets.token_urlsafe(18), True


def serve(study: Study, host: str = "127.0.0.1", port: int = 8765,
          token: str | None = None) -> None:  # fmt: skip
    """Run the dashboard until interrupted."""
    import importlib.util

    for module in ("fastapi", "uvicorn"):
        if importlib.util.find_spec(module) is None:
            raise UsageError(
                f"{module} is not installed; install it with: pip install 'overnight[serve]'"
            )
    import uvicorn

    required, generated = resolve_token(host, token)
    app = create_app(study, required)
    shown = f"[{host}]" if ":" in host else host
    if host in ("0.0.0.0", "::"):
        shown = "<this-machine>"
    url = f"http://{shown}:{port}/"
    print(f"overnight: dashboard of study {study.name!r} at {url}", flush=True)
    if generated:
        print(f"overnight: token required; open {url}?token={required}", flush=True)
    elif required:
        # Do not echo a token the user chose: it would end up in terminal logs.
        print("overnight: token required (the one given with --token)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
