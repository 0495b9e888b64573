"""Lean asynchronous clients of the app's HTTP APIs: Gradio's (upload a file, call a named
endpoint) and the app's own inference API (dashboard/api.py: one POST per prediction).

One process with one event loop can keep a hundred requests in flight for little CPU, so a load
test measures the server rather than a crowd of Python clients sharing its cores. It speaks the
documented REST protocol of Gradio's queue (https://www.gradio.app/guides/querying-gradio-apps-with-curl):

    POST /gradio_api/upload (multipart "files")           -> [server path]
    POST /gradio_api/call/<api_name> {"data": [...]}      -> {"event_id": id}
    GET  /gradio_api/call/<api_name>/<id>                 -> server-sent events, ending in
                                                             "complete" (data: outputs) or "error"
"""
from __future__ import annotations

import asyncio
import json
from urllib.parse import urlsplit

import httpx


KEEPALIVE_S = 4.0     # below uvicorn's default keep-alive timeout, which Gradio's launch keeps (5 s)


class CallError(RuntimeError):
    """The app answered a call with an error event, or not as the protocol says."""


def file_data(path: str) -> dict:
    """A server path as an endpoint input (what gradio_client.handle_file sends after its upload)."""
    return {"path": path, "meta": {"_type": "gradio.FileData"}}


class GradioHTTP:
    """Requests against one app; share one instance (one connection pool) among all coroutines."""

    def __init__(self, url: str, max_connections: int = 256, timeout: float = 600.0):
        # Idle connections are dropped before uvicorn's 5 s keep-alive ends: with both at 5 s, a
        # request sent on a connection the server is closing that instant fails with a ReadError.
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections,
                              keepalive_expiry=KEEPALIVE_S)
        self.http = httpx.AsyncClient(base_url=url.rstrip("/") + "/gradio_api", limits=limits,
                                      timeout=httpx.Timeout(timeout, connect=30.0))

    async def __aenter__(self) -> "GradioHTTP":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.http.aclose()

    async def upload(self, content: bytes, name: str, mime: str = "image/png") -> dict:
        r = await self.http.post("/upload", files=[("files", (name, content, mime))])
        if r.status_code != 200:
            raise CallError(f"upload: HTTP {r.status_code}: {r.text[:200]}")
        return file_data(r.json()[0])

    async def call(self, api_name: str, data: list) -> list:
        """The outputs of one queued call of /<api_name>, or CallError with the app's message."""
        r = await self.http.post(f"/call/{api_name}", json={"data": data})
        if r.status_code != 200:
            raise CallError(f"/{api_name}: HTTP {r.status_code}: {r.text[:200]}")
        event_id = r.json()["event_id"]
        event = None
        async with self.http.stream("GET", f"/call/{api_name}/{event_id}") as stream:
            async for line in stream.aiter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:") and event in ("complete", "error"):
                    payload = json.loads(line[5:])
                    if event == "error":
                        raise CallError(f"/{api_name}: {payload}")
                    return payload
        raise CallError(f"/{api_name}: the event stream ended without a result")


class ApiHTTP:
    """POST /api/v1/classify with an image's bytes as the body; share one instance among all coroutines.

    HTTP/1.1 written and read by hand over kept-alive asyncio connections (one per request in
    flight), as a compiled HTTP client would: httpx's pure-Python request path costs the shared
    cores several times the server's own CPU per request, and the bench measures the server.
    """

    def __init__(self, url: str, max_connections: int = 256, timeout: float = 600.0):
        parts = urlsplit(url)
        self.host, self.port, self.timeout = parts.hostname, parts.port or 80, timeout
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def __aenter__(self) -> "ApiHTTP":
        return self

    async def __aexit__(self, *exc) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()

    async def classify(self, content: bytes) -> dict:
        head = (f"POST /api/v1/classify HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Content-Type: image/png\r\nContent-Length: {len(content)}\r\n\r\n").encode()
        reused = bool(self.idle)
        conn = self.idle.pop() if reused else await asyncio.open_connection(self.host, self.port)
        try:
            status, body = await asyncio.wait_for(self._exchange(conn, head + content), self.timeout)
        except (asyncio.IncompleteReadError, ConnectionError):
            conn[1].close()
            if not reused:
                raise
            # the server closed a kept-alive connection as it was reused: once more on a new one
            conn = await asyncio.open_connection(self.host, self.port)
            status, body = await asyncio.wait_for(self._exchange(conn, head + content), self.timeout)
        self.idle.append(conn)
        if status != 200:
            raise CallError(f"/api/v1/classify: HTTP {status}: {body[:200]!r}")
        return json.loads(body)

    @staticmethod
    async def _exchange(conn, request: bytes) -> tuple[int, bytes]:
        reader, writer = conn
        writer.write(request)
        await writer.drain()
        lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
        if "content-length" not in headers:
            raise CallError(f"/api/v1/classify: HTTP {status} without a Content-Length")
        return status, await reader.readexactly(int(headers["content-length"]))
