"""A Google Cloud Storage JSON-API server on 127.0.0.1 for tests, with object generations.

GCS itself is unreachable from the machines that run the tests, so the `gs://` tests talk real HTTP
to this server: gcsfs and google-cloud-storage through `STORAGE_EMULATOR_HOST`, tensorstore (Orbax's
array writer) through `TENSORSTORE_GCS_HTTP_URL` (see `GCSServer.environment`). It keeps what those
clients rely on and third-party emulators got wrong for us: every write makes a new object
generation, reported in the JSON resource and in `x-goog-generation` on downloads, and the
preconditions `ifGenerationMatch` / `ifGenerationNotMatch` / `ifMetagenerationMatch` are enforced
(412, or 304 on a conditional read). tensorstore's OCDBT manifest updates are compare-and-swap on
generations: an emulator that ignores them corrupts checkpoints now and then.

Standard library only, plus `google_crc32c` (a dependency of google-cloud-storage) for the crc32c
hashes clients may verify. Objects live in memory; only the latest generation is kept.

Endpoints (the subset the clients above use; anything else is answered 501 and counted in
`unhandled`, so a test sees what it would need):
    POST   /storage/v1/b                                  create bucket
    GET    /storage/v1/b/B                                bucket resource
    GET    /storage/v1/b/B/o                              list: prefix, delimiter, startOffset,
                                                          endOffset, maxResults, pageToken,
                                                          includeTrailingDelimiter
    GET    /storage/v1/b/B/o/O                            object resource, or ?alt=media (Range)
    GET    /download/storage/v1/b/B/o/O?alt=media         object bytes (Range)
    PATCH  /storage/v1/b/B/o/O                            metadata
    DELETE /storage/v1/b/B/o/O
    POST   /storage/v1/b/B/o/O/(copyTo|rewriteTo)/b/B2/o/O2
    POST   /storage/v1/b/B/o/O/moveTo/o/O2                 rename within the bucket
    POST   /storage/v1/b/B/o/O/compose
    POST   /upload/storage/v1/b/B/o?uploadType=media|multipart|resumable
    PUT    /upload/storage/v1/b/B/o?upload_id=...         resumable chunks (Content-Range)
"""

from __future__ import annotations

import base64
import dataclasses
import email.parser
import email.policy
import hashlib
import itertools
import json
import re
import threading
import time
import urllib.parse
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import google_crc32c


@dataclasses.dataclass
class StoredObject:
    data: bytes
    generation: int
    metageneration: int
    content_type: str
    metadata: dict[str, str]
    created: str
    updated: str


class HTTPError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


class GCSServer:
    """`with GCSServer(buckets=("b",)) as server:` serves on `server.base_url` until the block ends.

    `server.objects[(bucket, name)]` is the store (a `StoredObject`); `server.requests` counts
    requests by "METHOD /api-prefix", `server.preconditions` those carrying each precondition
    parameter; `server.unhandled` lists requests answered 501 (or 500: a bug of this server).
    """

    def __init__(self, buckets: tuple[str, ...] = ()):
        self.buckets: dict[str, str] = {name: _now() for name in buckets}
        self.objects: dict[tuple[str, str], StoredObject] = {}
        self.uploads: dict[str, dict[str, Any]] = {}
        self.requests: Counter[str] = Counter()
        self.unhandled: list[str] = []
        self.preconditions: Counter[str] = Counter()  # requests carrying each precondition
        self.lock = threading.Lock()
        self._generations = itertools.count(1_700_000_000_000_000)
        self._upload_ids = itertools.count(1)
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "use the server in a with block"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def environment(self) -> dict[str, str]:
        """Variables that point gcsfs, google-cloud-storage and tensorstore at this server."""
        return {
            "STORAGE_EMULATOR_HOST": self.base_url,
            "TENSORSTORE_GCS_HTTP_URL": self.base_url,
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test-token",  # tensorstore's fixed bearer token
            "GOOGLE_CLOUD_PROJECT": "test-project",
        }

    def put(self, bucket: str, name: str, data: bytes, content_type: str = "application/octet-stream"):
        """Stores an object directly (test setup)."""
        with self.lock:
            return self._write(bucket, name, data, content_type, {}, {})

    def __enter__(self) -> GCSServer:
        server = self

        class Handler(_Handler):
            gcs = server

        self._httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        assert self._httpd is not None
        self._httpd.shutdown()
        self._httpd.server_close()

    # --- store operations (called with the lock held) ----------------------------------------

    def _get(self, bucket: str, name: str) -> StoredObject:
        if bucket not in self.buckets:
            raise HTTPError(404, f"bucket {bucket} not found")
        obj = self.objects.get((bucket, name))
        if obj is None:
            raise HTTPError(404, f"no such object: {bucket}/{name}")
        return obj

    def _check(self, bucket: str, name: str, query: dict[str, str], *, read: bool = False) -> None:
        """Enforces the generation / metageneration preconditions of a request."""
        obj = self.objects.get((bucket, name))
        generation = obj.generation if obj else 0
        metageneration = obj.metageneration if obj else None
        if "ifGenerationMatch" in query and int(query["ifGenerationMatch"]) != generation:
            raise HTTPError(412, "ifGenerationMatch precondition failed")
        if "ifGenerationNotMatch" in query and int(query["ifGenerationNotMatch"]) == generation:
            raise HTTPError(304 if read else 412, "ifGenerationNotMatch precondition failed")
        if "ifMetagenerationMatch" in query and (
            metageneration is None or int(query["ifMetagenerationMatch"]) != metageneration
        ):
            raise HTTPError(412, "ifMetagenerationMatch precondition failed")
        not_meta = query.get("ifMetagenerationNotMatch")
        if not_meta is not None and metageneration is not None and int(not_meta) == metageneration:
            raise HTTPError(304 if read else 412, "ifMetagenerationNotMatch precondition failed")

    def _write(
        self,
        bucket: str,
        name: str,
        data: bytes,
        content_type: str | None,
        metadata: dict[str, str],
        query: dict[str, str],
    ) -> StoredObject:
        if bucket not in self.buckets:
            raise HTTPError(404, f"bucket {bucket} not found")
        if not name:
            raise HTTPError(400, "object name is required")
        self._check(bucket, name, query)
        previous = self.objects.get((bucket, name))
        now = _now()
        obj = StoredObject(
            data=bytes(data),
            generation=next(self._generations),
            metageneration=1,
            content_type=content_type or "application/octet-stream",
            metadata=dict(metadata),
            created=previous.created if previous else now,
            updated=now,
        )
        self.objects[(bucket, name)] = obj
        return obj

    def resource(self, bucket: str, name: str, obj: StoredObject) -> dict[str, Any]:
        quoted = urllib.parse.quote(name, safe="")
        crc = base64.b64encode(google_crc32c.value(obj.data).to_bytes(4, "big")).decode()
        resource = {
            "kind": "storage#object",
            "id": f"{bucket}/{name}/{obj.generation}",
            "selfLink": f"{self.base_url}/storage/v1/b/{bucket}/o/{quoted}",
            "mediaLink": f"{self.base_url}/download/storage/v1/b/{bucket}/o/{quoted}"
            f"?generation={obj.generation}&alt=media",
            "name": name,
            "bucket": bucket,
            "generation": str(obj.generation),
            "metageneration": str(obj.metageneration),
            "contentType": obj.content_type,
            "storageClass": "STANDARD",
            "size": str(len(obj.data)),
            "md5Hash": base64.b64encode(hashlib.md5(obj.data).digest()).decode(),
            "crc32c": crc,
            "etag": f"{obj.generation}/{obj.metageneration}",
            "timeCreated": obj.created,
            "updated": obj.updated,
        }
        if obj.metadata:
            resource["metadata"] = obj.metadata
        return resource


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        pass  # only a client closing its keep-alive connection gets here (request errors are answered)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as every client here uses
    gcs: GCSServer

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    # --- plumbing ---------------------------------------------------------------------------

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if code not in (204, 304):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD" and code not in (204, 304):
            self.wfile.write(body)

    def _json(self, code: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self._send(
            code, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})}
        )

    def _dispatch(self, method: str) -> None:
        split = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(split.query, keep_blank_values=True))
        parts = split.path.split("/")[1:]  # raw: object names keep their %2F
        body = self._body() if method in ("POST", "PUT", "PATCH") else b""
        gcs = self.gcs
        gcs.requests[f"{method} /{parts[0] if parts else ''}"] += 1
        gcs.preconditions.update(key for key in query if key.startswith("if"))
        try:
            with gcs.lock:
                self._route(method, parts, query, body)
        except HTTPError as err:
            if err.code == 304:
                self._send(304)
            else:
                self._json(err.code, {"error": {"code": err.code, "message": err.message}})
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away (gcsfs cancels racing requests)
        except Exception as err:  # a server bug: answer it, and let the test see it
            gcs.unhandled.append(f"{method} {self.path}: {err!r}")
            self._json(500, {"error": {"code": 500, "message": repr(err)}})

    def _route(self, method: str, parts: list[str], query: dict[str, str], body: bytes) -> None:
        unq = [urllib.parse.unquote(p) for p in parts]
        if unq[:3] == ["storage", "v1", "b"]:
            rest = unq[3:]
            if not rest and method == "POST":
                return self._create_bucket(json.loads(body or b"{}"))
            if len(rest) == 1 and method in ("GET", "HEAD"):
                return self._bucket(rest[0])
            if len(rest) == 2 and rest[1] == "o" and method == "GET":
                return self._list(rest[0], query)
            if len(rest) == 3 and rest[1] == "o":
                bucket, name = rest[0], rest[2]
                if method in ("GET", "HEAD"):
                    return (
                        self._read(bucket, name, query)
                        if query.get("alt") == "media"
                        else self._meta(bucket, name, query)
                    )
                if method == "DELETE":
                    return self._delete(bucket, name, query)
                if method in ("PATCH", "PUT"):
                    return self._patch(bucket, name, json.loads(body or b"{}"), query)
            if len(rest) == 8 and rest[1] == "o" and rest[3] in ("copyTo", "rewriteTo") and method == "POST":
                return self._copy(
                    rest[0], rest[2], rest[5], rest[7], rest[3], json.loads(body or b"{}"), query
                )
            if len(rest) == 6 and rest[1] == "o" and rest[3] == "moveTo" and method == "POST":
                return self._move(rest[0], rest[2], rest[5], query)
            if len(rest) == 4 and rest[1] == "o" and rest[3] == "compose" and method == "POST":
                return self._compose(rest[0], rest[2], json.loads(body or b"{}"), query)
        if (
            unq[:4] == ["download", "storage", "v1", "b"]
            and len(unq) == 7
            and unq[5] == "o"
            and method in ("GET", "HEAD")
        ):
            return self._read(unq[4], unq[6], query)
        if unq[:4] == ["upload", "storage", "v1", "b"] and len(unq) == 6 and unq[5] == "o":
            if method == "PUT" or "upload_id" in query:
                return self._resumable_chunk(query["upload_id"], body)
            if method == "POST":
                return self._upload(unq[4], query, body)
        self.gcs.unhandled.append(f"{method} {self.path}")
        raise HTTPError(501, f"not implemented by the test server: {method} {self.path}")

    # --- endpoints ----------------------------------------------------------------------------

    def _create_bucket(self, resource: dict[str, Any]) -> None:
        name = resource.get("name", "")
        if name in self.gcs.buckets:
            raise HTTPError(409, f"bucket {name} exists")
        self.gcs.buckets[name] = _now()
        self._bucket(name)

    def _bucket(self, name: str) -> None:
        if name not in self.gcs.buckets:
            raise HTTPError(404, f"bucket {name} not found")
        self._json(
            200,
            {
                "kind": "storage#bucket",
                "id": name,
                "name": name,
                "timeCreated": self.gcs.buckets[name],
                "metageneration": "1",
                "location": "US",
                "storageClass": "STANDARD",
            },
        )

    def _list(self, bucket: str, query: dict[str, str]) -> None:
        if bucket not in self.gcs.buckets:
            raise HTTPError(404, f"bucket {bucket} not found")
        if "matchGlob" in query:
            self.gcs.unhandled.append(f"GET {self.path}")
            raise HTTPError(501, "matchGlob is not implemented by the test server")
        prefix, delimiter = query.get("prefix", ""), query.get("delimiter", "")
        start, end = query.get("startOffset", ""), query.get("endOffset")
        after = query.get("pageToken", "")
        limit = int(query.get("maxResults") or 1000)
        names = sorted(
            n
            for (b, n) in self.gcs.objects
            if b == bucket and n.startswith(prefix) and n >= start and (end is None or n < end)
        )
        items, prefixes, token = [], [], None
        for name in names:
            cut = name.find(delimiter, len(prefix)) if delimiter else -1
            key = name[: cut + len(delimiter)] if cut >= 0 else name
            if key <= after or (prefixes and key == prefixes[-1]):
                continue
            if len(items) + len(prefixes) == limit:
                token = max([*prefixes, *(i["name"] for i in items)])
                break
            if cut >= 0:
                prefixes.append(key)
                if query.get("includeTrailingDelimiter") == "true" and key == name:
                    items.append(self.gcs.resource(bucket, name, self.gcs.objects[(bucket, name)]))
            else:
                items.append(self.gcs.resource(bucket, name, self.gcs.objects[(bucket, name)]))
        payload: dict[str, Any] = {"kind": "storage#objects", "items": items}
        if prefixes:
            payload["prefixes"] = prefixes
        if token is not None:
            payload["nextPageToken"] = token
        self._json(200, payload)

    def _selected(self, bucket: str, name: str, query: dict[str, str], *, read: bool) -> StoredObject:
        obj = self.gcs._get(bucket, name)
        if "generation" in query and int(query["generation"]) != obj.generation:
            raise HTTPError(404, f"{bucket}/{name} has no generation {query['generation']}")
        self.gcs._check(bucket, name, query, read=read)
        return obj

    def _meta(self, bucket: str, name: str, query: dict[str, str]) -> None:
        obj = self._selected(bucket, name, query, read=True)
        self._json(200, self.gcs.resource(bucket, name, obj))

    def _read(self, bucket: str, name: str, query: dict[str, str]) -> None:
        obj = self._selected(bucket, name, query, read=True)
        data, size = obj.data, len(obj.data)
        resource = self.gcs.resource(bucket, name, obj)
        headers = {
            "Content-Type": obj.content_type,
            "x-goog-generation": str(obj.generation),
            "x-goog-metageneration": str(obj.metageneration),
            "x-goog-stored-content-length": str(size),
            "x-goog-stored-content-encoding": "identity",
            "x-goog-hash": f"crc32c={resource['crc32c']},md5={resource['md5Hash']}",
            "ETag": resource["etag"],
        }
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        if match is None:
            return self._send(200, data, headers)
        first, last = match.groups()
        if first == "":  # suffix range: the last N bytes
            begin, stop = max(size - int(last or 0), 0), size
        else:
            begin, stop = int(first), min(int(last) + 1, size) if last else size
        if begin >= size and size > 0 or (size == 0 and begin > 0):
            return self._json(
                416,
                {"error": {"code": 416, "message": "range not satisfiable"}},
                {"Content-Range": f"bytes */{size}"},
            )
        headers["Content-Range"] = f"bytes {begin}-{max(stop - 1, begin)}/{size}"
        self._send(206, data[begin:stop], headers)

    def _delete(self, bucket: str, name: str, query: dict[str, str]) -> None:
        self._selected(bucket, name, query, read=False)
        del self.gcs.objects[(bucket, name)]
        self._send(204)

    def _patch(self, bucket: str, name: str, patch: dict[str, Any], query: dict[str, str]) -> None:
        obj = self._selected(bucket, name, query, read=False)
        if "metadata" in patch:
            obj.metadata = {
                k: v for k, v in {**obj.metadata, **(patch["metadata"] or {})}.items() if v is not None
            }
        if patch.get("contentType"):
            obj.content_type = patch["contentType"]
        obj.metageneration += 1
        obj.updated = _now()
        self._json(200, self.gcs.resource(bucket, name, obj))

    def _copy(self, bucket, name, dest_bucket, dest_name, kind, resource, query) -> None:
        source = self.gcs._get(bucket, name)
        if "sourceGeneration" in query and int(query["sourceGeneration"]) != source.generation:
            raise HTTPError(404, f"{bucket}/{name} has no generation {query['sourceGeneration']}")
        metadata = resource.get("metadata", source.metadata) or {}
        obj = self.gcs._write(
            dest_bucket,
            dest_name,
            source.data,
            resource.get("contentType") or source.content_type,
            metadata,
            query,
        )
        out = self.gcs.resource(dest_bucket, dest_name, obj)
        if kind == "rewriteTo":
            size = str(len(obj.data))
            out = {
                "kind": "storage#rewriteResponse",
                "totalBytesRewritten": size,
                "objectSize": size,
                "done": True,
                "resource": out,
            }
        self._json(200, out)

    def _move(self, bucket: str, name: str, dest_name: str, query: dict[str, str]) -> None:
        """objects.move: a rename within the bucket, the source gone once the destination exists."""
        source = self.gcs._get(bucket, name)
        if "sourceGeneration" in query and int(query["sourceGeneration"]) != source.generation:
            raise HTTPError(404, f"{bucket}/{name} has no generation {query['sourceGeneration']}")
        obj = self.gcs._write(bucket, dest_name, source.data, source.content_type, source.metadata, query)
        del self.gcs.objects[(bucket, name)]
        self._json(200, self.gcs.resource(bucket, dest_name, obj))

    def _compose(self, bucket: str, name: str, request: dict[str, Any], query: dict[str, str]) -> None:
        data = b"".join(self.gcs._get(bucket, s["name"]).data for s in request.get("sourceObjects", []))
        destination = request.get("destination", {})
        obj = self.gcs._write(
            bucket, name, data, destination.get("contentType"), destination.get("metadata") or {}, query
        )
        self._json(200, self.gcs.resource(bucket, name, obj))

    def _upload(self, bucket: str, query: dict[str, str], body: bytes) -> None:
        kind = query.get("uploadType", "media")
        content_type = self.headers.get("Content-Type", "application/octet-stream")
        if kind == "media":
            obj = self.gcs._write(bucket, query.get("name", ""), body, content_type, {}, query)
            return self._json(200, self.gcs.resource(bucket, query.get("name", ""), obj))
        if kind == "multipart":
            message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                f"Content-Type: {content_type}\r\n\r\n".encode() + body
            )
            meta_part, media_part = list(message.iter_parts())
            resource = json.loads(meta_part.get_payload(decode=True) or b"{}")
            name = resource.get("name") or query.get("name", "")
            obj = self.gcs._write(
                bucket,
                name,
                media_part.get_payload(decode=True) or b"",
                resource.get("contentType") or media_part.get_content_type(),
                resource.get("metadata") or {},
                query,
            )
            return self._json(200, self.gcs.resource(bucket, name, obj))
        if kind == "resumable":
            resource = json.loads(body or b"{}")
            name = resource.get("name") or query.get("name", "")
            if bucket not in self.gcs.buckets:
                raise HTTPError(404, f"bucket {bucket} not found")
            self.gcs._check(bucket, name, query)
            upload_id = f"upload-{next(self.gcs._upload_ids)}"
            self.gcs.uploads[upload_id] = {
                "bucket": bucket,
                "name": name,
                "data": bytearray(),
                "query": query,
                "content_type": resource.get("contentType") or self.headers.get("X-Upload-Content-Type"),
                "metadata": resource.get("metadata") or {},
            }
            location = f"{self.gcs.base_url}/upload/storage/v1/b/{bucket}/o"
            location += f"?uploadType=resumable&upload_id={upload_id}"
            return self._send(200, b"", {"Location": location})
        raise HTTPError(400, f"unknown uploadType {kind!r}")

    def _resumable_chunk(self, upload_id: str, body: bytes) -> None:
        upload = self.gcs.uploads.get(upload_id)
        if upload is None:
            raise HTTPError(404, f"no upload {upload_id}")
        match = re.fullmatch(
            r"bytes (?:(\d+)-(\d+)|\*)/(\d+|\*)", self.headers.get("Content-Range", "").strip()
        )
        if match is None:  # a single request carrying everything
            first, total = 0, len(body)
        else:
            first = int(match.group(1)) if match.group(1) is not None else len(upload["data"])
            total = int(match.group(3)) if match.group(3) != "*" else None
        if first != len(upload["data"]) and body:
            raise HTTPError(400, f"chunk starts at {first}, {len(upload['data'])} bytes received so far")
        upload["data"] += body
        if total is None or len(upload["data"]) < total:
            received = len(upload["data"])
            headers = {"Range": f"bytes=0-{received - 1}"} if received else {}
            return self._send(308, b"", headers)
        del self.gcs.uploads[upload_id]
        obj = self.gcs._write(
            upload["bucket"],
            upload["name"],
            bytes(upload["data"]),
            upload["content_type"],
            upload["metadata"],
            upload["query"],
        )
        self._json(200, self.gcs.resource(upload["bucket"], upload["name"], obj))
