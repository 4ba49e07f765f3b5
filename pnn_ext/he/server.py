"""``pnn-he serve``: encrypted inference over HTTP (FastAPI on uvicorn), batches evaluated
in a pool of worker processes (pnn_ext.he.service_worker), sessions in a directory
(pnn_ext.he.session_store). docs/service.md describes the protocol.

    GET    /v1/health                      liveness (no token needed)
    GET    /v1/model                       model id, shapes, layers, suggested CKKS parameters, input
                                           range, range certificate, limits
    GET    /v1/certificate                 the range certificate and its one-line summary
    POST   /v1/sessions[?ttl=S]            body: a public key file (pnn-he keygen's public.ctx) -> session
    POST   /v1/sessions/{id}/predict       body: an inputs ciphertext message -> logits ciphertext message
    DELETE /v1/sessions/{id}               close a session

Bodies are application/octet-stream (pnn_ext.he.sealed_file's format); answers are JSON,
and every refusal is ``{"error": "one line"}`` with a 4xx status. A request body is
streamed to a file of this process's private spool directory (never held whole in
memory; refused past its limit as it arrives) and removed when the request ends, however
it ends. The server process holds no key: the workers load a session's public context.
"""
# No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations
# (Request, the query's type) as objects, and they are imported inside create_app.
import asyncio
import contextlib
import hmac
import multiprocessing
import os
import shutil
import socket
import tempfile
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass

from . import service_worker
from .session_store import ServiceError, SessionStore

MIB = 1 << 20


@dataclass
class ServeConfig:
    """pnn-he serve's settings (its flags)."""
    model: str
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 0                        # 0: every core this process may run on
    session_dir: str | None = None          # None: a private directory, removed at exit
    session_ttl: float = 3600.0
    max_sessions: int = 16
    max_context_bytes: int = 256 * MIB
    max_request_bytes: int = 1024 * MIB
    cache: int = 2                          # session contexts each worker keeps loaded
    max_pending: int = 0                    # 0: 2 x workers
    token: str | None = None


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Service:
    """The server process's state: the model (for its description), the store, the pool."""

    def __init__(self, cfg: ServeConfig, model, port: int):
        from .params import recommend
        self.cfg, self.model, self.port = cfg, model, port
        self.workers = cfg.workers or default_workers()
        self.private_store = cfg.session_dir is None
        root = tempfile.mkdtemp(prefix="pnn-he-sessions-") if self.private_store else cfg.session_dir
        self.store = SessionStore(root, cfg.session_ttl, cfg.max_sessions)
        self.spool = tempfile.mkdtemp(prefix="pnn-he-spool-")
        self.params = asdict(recommend(model, packing="batch"))
        self.pool: ProcessPoolExecutor | None = None
        self.pending = None

    # ------------------------------------------------------------ the pool
    def start_pool(self) -> None:
        # The fork server imports numpy and torch once for every worker: with one thread each
        # (OpenBLAS and OpenMP size their pools at import), so W workers use W cores.
        for name in service_worker.THREAD_VARIABLES:
            os.environ[name] = "1"
        ctx = multiprocessing.get_context("forkserver")     # workers fork from a clean single-threaded process
        ctx.set_forkserver_preload(["pnn_ext.he.service_worker", "pnn_ext.he.batch"])
        self.pool = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=service_worker.init,
                                        initargs=(self.cfg.model, self.store.root, self.cfg.cache))
        # Start every worker now (each loads the model), not at the first requests.
        list(self.pool.map(service_worker.ready, range(self.workers)))

    def stop_pool(self) -> None:
        if self.pool is None:
            return
        # A batch may run for minutes: the workers are stopped, not waited for (Python 3.11's
        # executor has no terminate_workers, so its processes are reached directly).
        processes = list((self.pool._processes or {}).values())
        self.pool.shutdown(wait=False, cancel_futures=True)
        for p in processes:
            p.terminate()
        for p in processes:
            p.join(10)
        self.pool = None

    async def run(self, fn, *args):
        try:
            return await asyncio.wrap_future(self.pool.submit(fn, *args))
        except BrokenProcessPool:
            self.stop_pool()
            self.start_pool()
            raise ServiceError(500, "a worker process died during this request; the pool was restarted") from None

    # ------------------------------------------------------------ requests
    def authorize(self, request) -> None:
        token = self.cfg.token
        if token is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise ServiceError(401, "missing or wrong bearer token (Authorization: Bearer ...)")

    async def spool_body(self, request, limit: int, what: str) -> str:
        """The request's body in a file of the spool directory (the caller removes it); 413 past ``limit``."""
        declared = request.headers.get("content-length")
        too_big = f"{what} is over this server's limit of {limit} bytes"
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ServiceError(413, f"{too_big} ({declared} bytes)")
        fd, path = tempfile.mkstemp(dir=self.spool, prefix="request-", suffix=".part")
        try:
            size = 0
            with os.fdopen(fd, "wb") as fh:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise ServiceError(413, too_big)
                    fh.write(chunk)
            if size == 0:
                raise ServiceError(400, f"{what} is empty")
        except BaseException:
            os.unlink(path)
            raise
        return path

    def describe(self) -> dict:
        from .certificate import describe
        from .params import depth
        m, r = self.model, self.model.input_range
        return {"model_id": m.model_id, "in_shape": list(m.in_shape), "in_features": m.in_features,
                "classes": m.num_outputs, "layers": m.summary(), "depth": depth(m), "params": self.params,
                "input_range": None if r is None else {"low": r.low, "high": r.high, "samples": r.samples},
                "certificate": m.certificate, "certificate_summary": describe(m.certificate),
                "session_ttl": self.store.ttl,
                "limits": {"max_context_bytes": self.cfg.max_context_bytes,
                           "max_request_bytes": self.cfg.max_request_bytes, "max_sessions": self.store.max_sessions}}


def create_app(cfg: ServeConfig, model, port: int, announce=None):
    """The FastAPI application serving ``model`` (loaded from ``cfg.model``)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect

    service = Service(cfg, model, port)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        try:
            service.pending = asyncio.Semaphore(cfg.max_pending or 2 * service.workers)
            await asyncio.get_running_loop().run_in_executor(None, service.start_pool)
            if announce:
                announce(service)
            yield
        finally:
            service.stop_pool()
            shutil.rmtree(service.spool, ignore_errors=True)
            if service.private_store:
                shutil.rmtree(service.store.root, ignore_errors=True)

    app = FastAPI(title="pnn-he serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service

    def error(status: int, message: str):
        return JSONResponse({"error": " ".join(message.split())}, status_code=status)

    @app.exception_handler(ServiceError)
    async def _service_error(request, e: ServiceError):
        return error(e.status, e.message)

    @app.exception_handler(HTTPException)
    async def _http_error(request, e: HTTPException):
        return error(e.status_code, f"{request.method} {request.url.path}: {e.detail}")

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error(400, f"bad request parameter {where}: {first.get('msg', 'invalid')}")

    @app.get("/v1/health")
    async def health():
        return {"status": "ok", "model_id": service.model.model_id, "workers": service.workers,
                "sessions": service.store.live()}

    @app.get("/v1/model")
    async def model_info(request: Request):
        service.authorize(request)
        return service.describe()

    @app.get("/v1/certificate")
    async def certificate(request: Request):
        service.authorize(request)
        d = service.describe()
        return {"model_id": d["model_id"], "certificate": d["certificate"], "summary": d["certificate_summary"]}

    @app.post("/v1/sessions")
    async def open_session(request: Request, ttl: float | None = None):
        service.authorize(request)
        if ttl is not None and not 0 < ttl <= service.store.ttl:
            raise ServiceError(400, f"ttl must be in (0, {service.store.ttl:g}] seconds, got {ttl:g}")
        try:
            path = await service.spool_body(request, cfg.max_context_bytes, "the context")
        except ClientDisconnect:
            return Response(status_code=400)
        try:
            meta = await service.run(service_worker.check_context, path)
            return await asyncio.to_thread(service.store.create, path, meta, ttl)     # copies the context
        finally:
            os.unlink(path)

    @app.post("/v1/sessions/{sid}/predict")
    async def predict(sid: str, request: Request):
        service.authorize(request)
        service.store.lookup(sid)
        async with service.pending:        # bounds the request files and the queue
            try:
                path = await service.spool_body(request, cfg.max_request_bytes, "the request")
            except ClientDisconnect:
                return Response(status_code=400)
            try:
                service.store.lookup(sid)   # it may have expired while the body arrived
                message, figures = await service.run(service_worker.predict, sid, path)
            finally:
                os.unlink(path)
        return Response(message, media_type="application/octet-stream",
                        headers={"x-pnn-seconds": f"{figures['seconds']:.6f}", "x-pnn-worker": str(figures["worker"])})

    @app.delete("/v1/sessions/{sid}")
    async def close_session(sid: str, request: Request):
        service.authorize(request)
        service.store.lookup(sid, touch=False)
        service.store.delete(sid)
        return {"closed": sid}

    return app


def serve(cfg: ServeConfig, model) -> bool:
    """Run the server until SIGINT or SIGTERM; prints one line with its address when it is ready.
    Whether it started (uvicorn has logged why not)."""
    import uvicorn
    family = socket.getaddrinfo(cfg.host, cfg.port, type=socket.SOCK_STREAM)[0][0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((cfg.host, cfg.port))
    sock.listen(128)
    port = sock.getsockname()[1]
    host = f"[{cfg.host}]" if family == socket.AF_INET6 else cfg.host

    def announce(service: Service) -> None:
        print(f"pnn-he serve: model {model.model_id[:16]} on http://{host}:{port} ({service.workers} workers, "
              f"sessions in {service.store.root})", flush=True)

    app = create_app(cfg, model, port, announce)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return server.started


@contextlib.contextmanager
def local_server(model: str, *flags: str, env: dict | None = None, timeout: float = 120.0, log=None):
    """``pnn-he serve MODEL --host 127.0.0.1 --port 0 FLAGS`` in a child process (for tests and
    benchmarks): yields (url, process) once it is ready; SIGTERM (then SIGKILL after 30 s) on
    leaving. ``log``: a file for its stderr (default: discarded). A server that does not come up
    within ``timeout`` seconds is killed and raises RuntimeError with its last error line."""
    import selectors
    import subprocess
    import sys
    import time
    cmd = [sys.executable, "-m", "pnn_ext.he", "serve", model, "--host", "127.0.0.1", "--port", "0", *flags]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log or subprocess.DEVNULL, text=True,
                            env={**os.environ, **(env or {})})
    try:
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while True:
            if not sel.select(max(0.0, deadline - time.monotonic())):
                raise RuntimeError(f"pnn-he serve did not start within {timeout:g} s")
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"pnn-he serve exited with code {proc.wait()} before it was ready")
            if "http://" in line:
                break
        sel.close()
        yield line.split()[line.split().index("on") + 1], proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        proc.stdout.close()
