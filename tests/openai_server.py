"""A real OpenAI-compatible HTTP server on 127.0.0.1 for tests, with injectable faults.

Standard library only (`http.server.ThreadingHTTPServer`): each request runs in its own thread, so
concurrency is real and the server can count it.

API (shared by the critique and evaluation tests):

    from tests.openai_server import OpenAIServer

    def responder(messages: list[dict], body: dict) -> str:   # body: the request JSON
        return "Conclusion: right [END]"

    with OpenAIServer(responder, latency=0.01, fault=fail_first(2, "429")) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="k")   # base_url ends in /v1
        ...
        server.stats.max_in_flight, server.stats.total_requests, server.stats.by_path

Endpoints: POST /v1/chat/completions, POST /v1/completions (the prompt is passed to the responder as
one user message), GET /v1/models, POST /v1/files (multipart upload), GET /v1/files/{id},
GET /v1/files/{id}/content, POST /v1/batches, GET /v1/batches/{id} (a batch stays "in_progress"
for `batch_seconds`, then completes with an output file and, if any line failed, an error file).
Requests with `n` > 1 call the responder n times. Usage counts whitespace-separated words.

Faults: `fault(request_number, body) -> kind | None` is asked before each completion request
(request_number counts completion requests from 1). Kinds:
  "429"        429 with a Retry-After header (`retry_after` seconds)
  "500"        500 with an OpenAI-style error body
  "slow"       answers only after `slow_seconds` (set it past the client's timeout)
  "malformed"  200 with a body that is not JSON
  "drop"       closes the connection without answering
In a batch, a line whose fault is not None goes to the batch's error file.

`api_key`, when set, makes every request without `Authorization: Bearer <api_key>` a 401.
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.parser
import email.policy
import itertools
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Responder = Callable[[list[dict[str, Any]], dict[str, Any]], str]
Fault = Callable[[int, dict[str, Any]], "str | None"]
FAULT_KINDS = ("429", "500", "slow", "malformed", "drop")


def echo_responder(messages: list[dict[str, Any]], body: dict[str, Any]) -> str:
    """Answers with the last message's content, so each answer is traceable to its request."""
    return f"echo: {messages[-1]['content']}"


def fail_first(n: int, kind: str) -> Fault:
    """The first `n` completion requests fail with `kind`, then all succeed."""
    return lambda number, body: kind if number <= n else None


def fail_every(k: int, kind: str) -> Fault:
    """Every `k`-th completion request fails with `kind`."""
    return lambda number, body: kind if number % k == 0 else None


def fail_when(predicate: Callable[[dict[str, Any]], bool], kind: str) -> Fault:
    """Requests whose body satisfies `predicate` always fail with `kind` (a record that never succeeds)."""
    return lambda number, body: kind if predicate(body) else None


@dataclasses.dataclass
class Stats:
    """What the server saw; `max_in_flight` is the peak number of completion requests in progress."""

    total_requests: int = 0
    completion_requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    faults: Counter = dataclasses.field(default_factory=Counter)
    by_path: Counter = dataclasses.field(default_factory=Counter)
    authorization_headers: set = dataclasses.field(default_factory=set)


def _words(text: str) -> int:
    return len(text.split())


class OpenAIServer:
    """The server; start it with `with` (or `start()` / `stop()`), point a client at `base_url`."""

    def __init__(
        self,
        responder: Responder = echo_responder,
        *,
        fault: Fault | None = None,
        latency: float = 0.0,
        retry_after: float = 0.05,
        slow_seconds: float = 3.0,
        batch_seconds: float = 0.0,
        api_key: str | None = None,
        models: tuple[str, ...] = ("test-model",),
    ):
        self.responder = responder
        self.fault = fault
        self.latency = latency
        self.retry_after = retry_after
        self.slow_seconds = slow_seconds
        self.batch_seconds = batch_seconds
        self.api_key = api_key
        self.models = models
        self.stats = Stats()
        self.files: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "start the server first"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self) -> OpenAIServer:
        server = self
        handler = type("Handler", (_Handler,), {"server_ref": server})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- behaviour -------------------------------------------------------------------------------
    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids)}"

    def completion(self, body: dict[str, Any], chat: bool) -> dict[str, Any]:
        """A chat.completion (or text_completion) object answering `body` through the responder."""
        if chat:
            messages = body.get("messages") or []
        else:
            messages = [{"role": "user", "content": str(body.get("prompt", ""))}]
        texts = [self.responder(messages, body) for _ in range(int(body.get("n") or 1))]
        prompt_tokens = sum(_words(str(m.get("content", ""))) for m in messages)
        completion_tokens = sum(_words(t) for t in texts)
        if chat:
            choices = [
                {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
                for i, t in enumerate(texts)
            ]
        else:
            choices = [{"index": i, "text": t, "finish_reason": "stop"} for i, t in enumerate(texts)]
        return {
            "id": self.new_id("chatcmpl" if chat else "cmpl"),
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": body.get("model", self.models[0]),
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def run_batch(self, batch: dict[str, Any]) -> None:
        """Answers every line of the batch's input file after `batch_seconds`, then marks it completed."""
        time.sleep(self.batch_seconds)
        lines = self.files[batch["input_file_id"]]["content"].decode("utf-8").splitlines()
        out, err = [], []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            req = json.loads(line)
            kind = self.fault(number, req["body"]) if self.fault else None
            rid = self.new_id("batch_req")
            if kind is not None:
                error = {"code": "server_error", "message": f"injected fault {kind}"}
                err.append({"id": rid, "custom_id": req["custom_id"], "response": None, "error": error})
                continue
            body = self.completion(req["body"], chat=req["url"].endswith("/chat/completions"))
            response = {"status_code": 200, "request_id": rid, "body": body}
            out.append({"id": rid, "custom_id": req["custom_id"], "response": response, "error": None})
        with self._lock:
            for key, rows in (("output_file_id", out), ("error_file_id", err)):
                if rows:
                    content = "".join(json.dumps(r) + "\n" for r in rows).encode("utf-8")
                    batch[key] = self.add_file(content, f"{batch['id']}_{key}.jsonl", "batch_output")
            batch["request_counts"] = {
                "total": len(out) + len(err),
                "completed": len(out),
                "failed": len(err),
            }
            batch["status"] = "completed"
            batch["completed_at"] = int(time.time())

    def add_file(self, content: bytes, filename: str, purpose: str) -> str:
        file_id = self.new_id("file")
        self.files[file_id] = {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
            "content": content,
        }
        return file_id


class _Handler(BaseHTTPRequestHandler):
    server_ref: OpenAIServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, the body waits ~40 ms for the
    # client's delayed ACK and every request looks 40 ms slow.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        """Silent: tests read `stats`, not stderr."""

    # -- helpers ---------------------------------------------------------------------------------
    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode("utf-8")
        self.send_response(status)
        content_type = "application/octet-stream" if isinstance(payload, bytes) else "application/json"
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        # The client may have given up (its timeout): then there is nobody to answer.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        err = {"error": {"message": message, "type": "server_error", "param": None, "code": str(status)}}
        self._send(status, err, headers)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _authorized(self) -> bool:
        srv = self.server_ref
        header = self.headers.get("Authorization", "")
        with srv._lock:
            srv.stats.total_requests += 1
            srv.stats.by_path[self.path.split("?")[0]] += 1
            srv.stats.authorization_headers.add(header)
        if srv.api_key is not None and header != f"Bearer {srv.api_key}":
            self._error(401, "invalid api key")
            return False
        return True

    # -- routes ----------------------------------------------------------------------------------
    def do_GET(self) -> None:
        srv = self.server_ref
        if not self._authorized():
            return
        parts = self.path.split("?")[0].strip("/").split("/")
        if parts == ["v1", "models"]:
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "test"} for m in srv.models]
            self._send(200, {"object": "list", "data": data})
        elif len(parts) == 3 and parts[:2] == ["v1", "files"] and parts[2] in srv.files:
            self._send(200, {k: v for k, v in srv.files[parts[2]].items() if k != "content"})
        elif len(parts) == 4 and parts[:2] == ["v1", "files"] and parts[3] == "content":
            if parts[2] not in srv.files:
                self._error(404, f"no file {parts[2]}")
            else:
                self._send(200, srv.files[parts[2]]["content"])
        elif len(parts) == 3 and parts[:2] == ["v1", "batches"] and parts[2] in srv.batches:
            with srv._lock:
                self._send(200, dict(srv.batches[parts[2]]))
        else:
            self._error(404, f"no route GET {self.path}")

    def do_POST(self) -> None:
        raw = self._body()
        if not self._authorized():
            return
        path = self.path.split("?")[0].rstrip("/")
        if path in ("/v1/chat/completions", "/v1/completions"):
            self._completion(json.loads(raw), chat=path.endswith("chat/completions"))
        elif path == "/v1/files":
            self._upload(raw)
        elif path == "/v1/batches":
            self._create_batch(json.loads(raw))
        else:
            self._error(404, f"no route POST {self.path}")

    def _completion(self, body: dict[str, Any], chat: bool) -> None:
        srv = self.server_ref
        with srv._lock:
            srv.stats.completion_requests += 1
            number = srv.stats.completion_requests
            srv.stats.in_flight += 1
            srv.stats.max_in_flight = max(srv.stats.max_in_flight, srv.stats.in_flight)
        try:
            kind = srv.fault(number, body) if srv.fault else None
            if kind is not None:
                with srv._lock:
                    srv.stats.faults[kind] += 1
            if srv.latency:
                time.sleep(srv.latency)
            if kind == "429":
                self._error(429, "rate limited", {"Retry-After": str(srv.retry_after)})
            elif kind == "500":
                self._error(500, "internal error")
            elif kind == "malformed":
                self._send(200, b'{"id": "chatcmpl-x", "choices": [')
            elif kind == "drop":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
            else:
                if kind == "slow":
                    time.sleep(srv.slow_seconds)
                self._send(200, srv.completion(body, chat))
        finally:
            with srv._lock:
                srv.stats.in_flight -= 1

    def _upload(self, raw: bytes) -> None:
        srv = self.server_ref
        head = f"Content-Type: {self.headers.get('Content-Type')}\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + raw)
        fields: dict[str, Any] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            fields[name] = (part.get_filename(), part.get_payload(decode=True))
        if "file" not in fields:
            self._error(400, "multipart upload needs a 'file' part")
            return
        filename, content = fields["file"]
        purpose = fields.get("purpose", (None, b"batch"))[1].decode()
        with srv._lock:
            file_id = srv.add_file(content, filename or "upload.jsonl", purpose)
            meta = {k: v for k, v in srv.files[file_id].items() if k != "content"}
        self._send(200, meta)

    def _create_batch(self, body: dict[str, Any]) -> None:
        srv = self.server_ref
        if body.get("input_file_id") not in srv.files:
            self._error(400, f"unknown input_file_id {body.get('input_file_id')!r}")
            return
        with srv._lock:
            batch = {
                "id": srv.new_id("batch"),
                "object": "batch",
                "endpoint": body["endpoint"],
                "input_file_id": body["input_file_id"],
                "completion_window": body.get("completion_window", "24h"),
                "status": "in_progress",
                "created_at": int(time.time()),
                "output_file_id": None,
                "error_file_id": None,
                "request_counts": {"total": 0, "completed": 0, "failed": 0},
                "metadata": body.get("metadata"),
            }
            srv.batches[batch["id"]] = batch
            snapshot = dict(batch)
        threading.Thread(target=srv.run_batch, args=(batch,), daemon=True).start()
        self._send(200, snapshot)
