"""``tinydistill serve MODEL_DIR``: an HTTP JSON service on any exported model directory.

    POST /predict   {"texts": ["播放周杰伦的稻香", ...]} -> {"predictions": [<the task's decoded output>, ...]}
    GET  /health    {"status": "ok", "uptime_s", "requests", "errors", "queued_texts"}
    GET  /metadata  task, heads and labels, model format / runtime / precision, size, limits, batching

By default an ONNX export runs on the ``onnxruntime-c`` runtime (``compress/ort_capi.py``), so the server
process imports neither paddle nor numpy nor the onnxruntime package; other formats run on their own
runtime (``--runtime`` overrides).  Concurrent requests are micro-batched: a worker takes the queued
requests, waits up to ``--batch-window-ms`` for those being read at that moment and runs them as one
model call of at most ``--max-batch`` texts (``--max-batch 1``: no batching).  Errors are one-line JSON ``{"error": ...}``:
4xx for the client's input (bad JSON, no ``texts``, an empty list, too many texts, a text or body too
long), 503 when overloaded or shutting down, 504 when the model takes longer than ``--timeout``, 500 when
the model fails (only the failing request's texts: a failed batch is re-run request by request).

HTTP server: the standard library's ``ThreadingHTTPServer``, not uvicorn/starlette or FastAPI (both in the
environment through paddlenlp).  Measured RSS of a bare interpreter after the import: 10.8 MiB, +8.4 MiB
with ``http.server``, +18.1 MiB with uvicorn + starlette, +34.8 MiB with uvicorn + FastAPI; the compressed
SLU model's whole predictor process is ~69 MiB, so a framework would add 15-50 % to what this project set
out to shrink.  An event loop would not make inference faster either: the model runs in C with the GIL
released (ctypes), so handler threads plus a few inference workers already use every core; the handler
threads are capped (``--max-connections``) and keep-alive connections time out when idle.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tinydistill.compress.common import json_default
from tinydistill.compress.microbatch import Batcher, Refused, limit_malloc_arenas, malloc_trim
from tinydistill.compress.serve_options import add_arguments  # noqa: F401  (tinydistill serve's options)


class HTTPError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class Service:
    """Everything but HTTP: the predictor(s), validation, batching, health and metadata (the handler calls
    ``predict``, ``health`` and ``metadata``)."""

    def __init__(self, model_dir, runtime: str | None = None, threads: int = 1, workers: int = 1,
                 max_batch: int = 32, batch_window_ms: float = 2.0, max_texts: int = 64,
                 max_text_chars: int = 512, max_body_bytes: int = 1 << 20, timeout_s: float = 30.0,
                 data_dir: str | None = None):
        from tinydistill.compress.common import read_manifest
        from tinydistill.compress.predictors import open_predictor

        self.model_dir = Path(model_dir)
        self.manifest = read_manifest(self.model_dir)
        if runtime is None:  # a lean runtime where one runs this format (onnxruntime-c for ONNX exports)
            from tinydistill.compress import RUNTIMES

            runtime = next((e.name for e in RUNTIMES.entries()
                            if e.meta.get("lean") and self.manifest.get("format") in e.meta["formats"]), None)
        kwargs = {"data_dir": data_dir} if data_dir else {}
        first = open_predictor(self.model_dir, runtime=runtime, threads=threads, **kwargs)
        # ONNX Runtime sessions are safe to run from several threads; other runtimes get one predictor each
        shared = first.runtime.startswith("onnxruntime")
        predictors = [first] + [first if shared else open_predictor(self.model_dir, runtime=runtime,
                                                                    threads=threads, **kwargs)
                                for _ in range(max(1, workers) - 1)]
        self.runtime = first.runtime
        self.task = first.task
        self.limits = {"max_texts": max_texts, "max_text_chars": max_text_chars, "max_body_bytes": max_body_bytes,
                       "timeout_s": timeout_s}
        self.max_body_bytes, self.timeout_s = max_body_bytes, timeout_s
        first.predict(["你好"])  # warm-up: a model or label problem fails now, not on the first request
        # and once at the largest input a client may send (a full batch of the longest texts), so a model or a
        # memory limit that cannot take it fails at start
        longest = ("播放周杰伦的稻香然后导航到北京西站再给妈妈打电话" * (max_text_chars // 25 + 1))[:max_text_chars]
        first.predict([longest] * max(1, min(max_batch, 256)), batch_size=max(1, max_batch))
        self.batcher = Batcher([lambda texts, p=p: p.predict(texts, batch_size=max(1, max_batch)) for p in predictors],
                               max_batch=max_batch, window_s=batch_window_ms / 1000.0,
                               max_queued=max(1024, 16 * max_texts), housekeeping=malloc_trim)
        self.batching = {"max_batch": max_batch, "batch_window_ms": batch_window_ms, "workers": max(1, workers),
                         "threads": threads}
        self.started = time.time()
        self.requests = self.errors = self.inflight = 0
        self.stats_lock = threading.Lock()

    def metadata(self) -> dict:
        from tinydistill.compress.common import deploy_size_bytes

        m = self.manifest
        return {"model_dir": str(self.model_dir.resolve()), "task": (m.get("task") or {}).get("name"),
                "heads": [{"name": h["name"], "kind": h["kind"], "labels": list(h.get("labels") or [])}
                          for h in m["heads"]],
                "format": m.get("format"), "runtime": self.runtime, "precision": m.get("precision", "fp32"),
                "model_file": m.get("model_file"), "size_bytes": deploy_size_bytes(self.model_dir),
                "num_parameters": m.get("num_parameters"), "max_seq_length": m.get("max_seq_length"),
                "arch": m.get("arch"), "limits": self.limits, "batching": self.batching}

    def health(self) -> dict:
        return {"status": "ok", "uptime_s": round(time.time() - self.started, 1), "requests": self.requests,
                "errors": self.errors, "queued_texts": self.batcher.queued_texts,
                "batches": self.batcher.batches, "batched_texts": self.batcher.batched_texts}

    def parse(self, body: bytes) -> list[str]:
        try:
            payload = json.loads(body.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise HTTPError(400, f"body is not UTF-8: {exc}") from None
        except ValueError as exc:
            raise HTTPError(400, f"bad JSON: {exc}") from None
        if not isinstance(payload, dict) or "texts" not in payload:
            raise HTTPError(400, 'expected a JSON object {"texts": ["...", ...]}')
        texts = payload["texts"]
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise HTTPError(400, '"texts" must be a list of strings')
        if not texts:
            raise HTTPError(400, '"texts" is empty')
        if len(texts) > self.limits["max_texts"]:
            raise HTTPError(413, f'{len(texts)} texts; at most {self.limits["max_texts"]} per request')
        for i, t in enumerate(texts):
            if len(t) > self.limits["max_text_chars"]:
                raise HTTPError(413, f'texts[{i}] has {len(t)} characters; at most {self.limits["max_text_chars"]}')
        return texts

    def drain(self, timeout: float = 10.0) -> None:
        """After the listener stopped: let queued requests finish and their answers go out."""
        self.batcher.close(timeout)
        deadline = time.monotonic() + timeout
        while self.inflight and time.monotonic() < deadline:
            time.sleep(0.01)

    def predict(self, read_body) -> dict:
        with self.batcher.arriving():
            texts = self.parse(read_body())
            try:
                job = self.batcher.submit(texts)
            except Refused as exc:
                raise HTTPError(503, exc.message, {"Retry-After": "1"} if exc.retry else None) from None
        if not job.done.wait(self.timeout_s):
            job.abandoned = True
            raise HTTPError(504, f"the model did not answer within {self.timeout_s:g}s")
        if job.error is not None:
            raise HTTPError(500, f"model failed: {type(job.error).__name__}: {job.error}")
        return {"predictions": job.result}

    def count(self, status: int) -> None:
        with self.stats_lock:
            self.requests += 1
            self.errors += status >= 400



class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a client reuses its connection
    timeout = 30  # seconds a connection may sit idle or half-sent before its thread lets it go
    server_version = "tinydistill-serve"
    # headers and body are separate writes: with Nagle's algorithm on, the body waits for the client's delayed
    # ACK (~40 ms on Linux) on every kept-alive response
    disable_nagle_algorithm = True
    service: Service  # set on the subclass make_server builds

    def _send(self, status: int, obj: dict, headers: dict | None = None) -> None:
        try:
            data = json.dumps(obj, ensure_ascii=False, allow_nan=False, default=json_default).encode("utf-8")
        except (TypeError, ValueError) as exc:  # e.g. a NaN in the model's output
            status, data = 500, json.dumps({"error": f"model output is not valid JSON: {exc}"}).encode()
        self.service.count(status)
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The base class's own errors (malformed request line, headers too long, ...) as one-line JSON."""
        self.close_connection = True
        if getattr(self, "request_version", "HTTP/0.9") == "HTTP/0.9":  # unparsed request line: answer HTTP/1.1
            self.request_version = "HTTP/1.1"
        self._send(code, {"error": " ".join((message or self.responses.get(code, ("error",))[0]).split())})

    def _error(self, exc: HTTPError) -> None:
        self._send(exc.status, {"error": " ".join(exc.message.split())}, exc.headers)

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise HTTPError(411, "chunked bodies are not supported; send Content-Length")
        length = self.headers.get("Content-Length")
        if length is None:
            self.close_connection = True
            raise HTTPError(411, "Content-Length required")
        try:
            n = int(length)
        except ValueError:
            self.close_connection = True
            raise HTTPError(400, f"bad Content-Length {length!r}") from None
        if n < 0:
            self.close_connection = True
            raise HTTPError(400, f"bad Content-Length {length!r}")
        if n > self.service.max_body_bytes:
            self.close_connection = True  # the unread body would be taken for the next request
            if n <= 16 * self.service.max_body_bytes:  # read it away: closing on unread data resets the
                while n > 0:                            # connection before the client reads the 413
                    n -= len(self.rfile.read(min(n, 1 << 16)) or b"\0" * n)
            raise HTTPError(413, f"body of {length} bytes; at most {self.service.max_body_bytes}")
        return self.rfile.read(n)

    def do_POST(self) -> None:
        with self.service.stats_lock:
            self.service.inflight += 1
        try:
            if self.path.split("?", 1)[0] != "/predict":
                self.close_connection = True
                raise HTTPError(404 if self.path.split("?", 1)[0] not in ("/health", "/metadata") else 405,
                                f"POST {self.path}: not found (POST /predict, GET /health, GET /metadata)")
            self._send(200, self.service.predict(self._body))
        except HTTPError as exc:
            self._error(exc)
        finally:
            with self.service.stats_lock:
                self.service.inflight -= 1

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/health":
            self._send(200, self.service.health())
        elif path == "/metadata":
            self._send(200, self.service.metadata())
        else:
            self._error(HTTPError(405 if path == "/predict" else 404,
                                  f"GET {self.path}: not found (POST /predict, GET /health, GET /metadata)"))

    def _not_allowed(self) -> None:
        self.close_connection = True
        self._error(HTTPError(405, f"{self.command} is not supported (POST /predict, GET /health, GET /metadata)"))

    do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _not_allowed

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's signature
        if self.server.access_log:
            sys.stderr.write(f"{self.address_string()} - {format % args}\n")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # idle keep-alive connections do not hold up shutdown (Service.drain waits for answers)
    request_queue_size = 128

    def __init__(self, address, handler, max_connections: int = 128, access_log: bool = False):
        self.slots = threading.BoundedSemaphore(max_connections)
        self.access_log = access_log
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:
        if not self.slots.acquire(blocking=False):  # at the cap: answer at once rather than queue unseen
            try:
                body = b'{"error": "too many connections"}'
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                b"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


def make_server(service: Service, host: str = "127.0.0.1", port: int = 8000, max_connections: int = 128,
                access_log: bool = False) -> Server:
    handler = type("BoundHandler", (Handler,), {"service": service})
    return Server((host, port), handler, max_connections=max_connections, access_log=access_log)


def cli_serve(args: argparse.Namespace) -> int:
    from tinydistill.distill.schema import ConfigError

    for name in ("threads", "workers", "max_batch", "max_texts", "max_text_chars", "max_body_bytes",
                 "max_connections"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    t0 = time.time()
    limit_malloc_arenas()
    service = Service(args.model_dir, runtime=args.runtime, threads=args.threads, workers=args.workers,
                      max_batch=args.max_batch, batch_window_ms=args.batch_window_ms, max_texts=args.max_texts,
                      max_text_chars=args.max_text_chars, max_body_bytes=args.max_body_bytes,
                      timeout_s=args.timeout, data_dir=args.data_dir)
    try:
        server = make_server(service, args.host, args.port, args.max_connections, args.access_log)
    except OSError as exc:
        service.drain()
        raise ConfigError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None

    def stop(signum, frame):  # shutdown() waits for serve_forever, so it runs on another thread
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    host, port = server.server_address[:2]
    meta = service.metadata()
    print(f"serving {args.model_dir} ({meta['task']}, {meta['format']} on {service.runtime}, "
          f"max batch {args.max_batch}, {args.workers} worker(s)) on http://{host}:{port} "
          f"(ready in {time.time() - t0:.1f}s)", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        service.drain()
        from tinydistill.distill.logs import progress

        progress(f"stopped after {service.requests} requests ({service.errors} errors)")
    return 0
