"""Corrections to Gradio (6.x) internals that a crowd of visitors runs into, applied by app.py.

`lean_sessions`: for each new session Gradio builds the config of every block of the app, so
that a deep link (`gr.DeepLinkButton`) can later rebuild the page as the visitor left it. Every
API call that comes without a session (REST `/call`, curl, a new gradio_client) starts one, so on
this dashboard of some eighty blocks that copy was the largest Python cost of a cheap request and
a weight kept per session until thousands of sessions had passed (bench/results/server_profile.md).
The dashboard has no deep link, so a session starts with no configs; Gradio still records the
config of each component a handler updates (`SessionState.__setitem__`), which is all the page
needs.

`atomic_image_cache`: Gradio saves an output image under a folder named by the hash of its bytes,
rewriting the file in place each time. Two visitors who get the same map at once (the same
example, the same method) share that path: one request truncates the file while the other's
client is downloading it, which then receives nothing. The file is now written under a temporary
name and renamed into place, and an existing copy (the same bytes) is only touched, as Gradio
already does for copied files (`save_file_to_cache`).

`lean_routes`: every prediction is three HTTP requests (upload, join the queue, read its events),
and the HTTP stack, not the model, is most of a prediction's server CPU
(bench/results/server_profile.md). Two of its costs are Gradio's layout, not its function:
- its login check is a plain function, so FastAPI hands every request to a worker thread to run
  it and waits for the answer, a thread switch per request on two busy cores; the same check now
  runs as a coroutine on the event loop (it reads a dict: nothing to wait for);
- FastAPI tries the routes in the order they were declared, and the queue's routes come after
  some fifty others; they are moved to the front. A route moves ahead of another only when no URL
  path could match both (`may_overlap`, which answers yes when unsure), so every request is
  answered by the same route as before.

`inline_upload_writes`: Gradio writes an upload to a temporary file it opens on the event loop, but
hands each chunk's write, and the final seek, to a worker thread. A chunk is at most what the
server read from the socket at once, and its write lands in the page cache in microseconds, less
than the thread switch; they now run on the loop, as Gradio's own open, rename and mkdir do.

`cheap_analytics_inline`: after every event Gradio's queue hands its analytics summary to a worker
thread, although the summary is recomputed only every GRADIO_ANALYTICS_CACHE_FREQUENCY events
(dashboard/process.py) and is otherwise a cached value; only a due recompute goes to the thread.

Each patch checks that the Gradio installed is the one it was written against; all are idempotent.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import re
import tempfile
from pathlib import Path

from fastapi.routing import APIRoute
from gradio import processing_utils, queueing, route_utils, routes
from gradio.state_holder import SessionState

# The routes every prediction takes, busiest first: REST clients upload, call and read the
# call's events; the page and gradio_client upload, join the queue and read its stream.
QUEUE_ROUTES = (("POST", "/gradio_api/upload"), ("POST", "/gradio_api/call/{api_name}"),
                ("GET", "/gradio_api/call/{api_name}/{event_id}"), ("POST", "/gradio_api/queue/join"),
                ("GET", "/gradio_api/queue/data"))
LOGIN_CHECK = "App.create_app.<locals>.login_check"


class _NoBlocks:
    """What SessionState.__init__ reads of the app, with no block to copy the config of."""

    def __init__(self, blocks):
        self.default_config = blocks.default_config
        self.blocks = {}


def lean_sessions() -> None:
    """Make new Gradio sessions start without the per-block config copies; idempotent."""
    init = SessionState.__init__
    if getattr(init, "lean", False):
        return
    # The attributes read from `blocks` must be the two _NoBlocks has; anything else needs a look.
    read = set(re.findall(r"(?<![\w.])blocks\.(\w+)", inspect.getsource(init)))
    if read != {"default_config", "blocks"}:
        raise RuntimeError("gradio.state_holder.SessionState changed: review dashboard/gradio_patches.py")

    def lean_init(self, blocks):
        init(self, _NoBlocks(blocks))

    lean_init.lean = True
    SessionState.__init__ = lean_init


def atomic_image_cache() -> None:
    """Make Gradio write each cached output image atomically, and reuse an existing copy."""
    save = processing_utils.save_pil_to_cache
    if getattr(save, "atomic", False):
        return
    if "write_bytes" not in inspect.getsource(save):
        raise RuntimeError("gradio.processing_utils.save_pil_to_cache changed: review dashboard/gradio_patches.py")

    def save_pil_atomically(img, cache_dir: str, name: str = "image", format: str = "webp") -> str:
        data = processing_utils.encode_pil_to_bytes(img, format)
        folder = Path(cache_dir) / processing_utils.hash_bytes(data)
        folder.mkdir(exist_ok=True, parents=True)
        path = (folder / f"{name}.{format}").resolve()
        if path.exists():                 # a folder named by the hash of these bytes: the same image
            os.utime(path)                # handed out again: Gradio's cache sweep ages files by time
            return str(path)
        fd, staging = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(staging, path)
        return str(path)

    save_pil_atomically.atomic = True
    processing_utils.save_pil_to_cache = save_pil_atomically


def _segment_overlap(a: str, b: str) -> bool:
    """Whether one path segment of each template could match the same text; True when unsure."""
    if "{" not in a and "{" not in b:
        return a == b
    # A parameter matches any text: compare the literal text before the first one.
    pa, pb = a.split("{", 1)[0], b.split("{", 1)[0]
    if "{" in a and "{" in b:
        return pa.startswith(pb) or pb.startswith(pa)
    literal, prefix = (b, pa) if "{" in a else (a, pb)
    return literal.startswith(prefix)


def may_overlap(a: str, b: str) -> bool:
    """Whether some URL path could match both route templates; True when unsure.

    A `{name:path}` parameter may span several segments: from it on, anything may match.
    """
    sa, sb = a.strip("/").split("/"), b.strip("/").split("/")
    for x, y in zip(sa, sb):
        if not _segment_overlap(x, y):
            return False
        if ":path}" in x or ":path}" in y:
            return True
    return len(sa) == len(sb)


def queue_routes_first(routes_: list) -> list:
    """`routes_` reordered with QUEUE_ROUTES first, each after every earlier route it may overlap.

    Every pair of routes that may match one path keeps its order, so the first route to match a
    request (the one FastAPI runs) is the same as before.
    """
    paths = [getattr(r, "path", None) for r in routes_]
    hot = []
    for method, path in QUEUE_ROUTES:
        found = [i for i, r in enumerate(routes_) if paths[i] == path and method in (getattr(r, "methods", None) or ())]
        if len(found) != 1:
            raise RuntimeError(f"Gradio's {method} {path} route changed: review dashboard/gradio_patches.py")
        hot.append(found[0])
    placed: list[int] = []

    def place(i: int) -> None:
        if i in placed:
            return
        for j in range(i):       # every earlier route that may match one of its paths goes first
            if paths[j] is None or paths[i] is None or may_overlap(paths[j], paths[i]):
                place(j)
        placed.append(i)

    for i in hot:
        place(i)
    return [routes_[i] for i in placed] + [r for i, r in enumerate(routes_) if i not in placed]


def _on_the_loop(check):
    """Gradio's login check as a coroutine: FastAPI awaits it instead of using a worker thread."""
    @functools.wraps(check)          # the same signature, so FastAPI resolves the same arguments
    async def login_check(**kwargs):
        return check(**kwargs)
    login_check.on_loop = True
    return login_check


def _login_checks_on_the_loop(route: APIRoute) -> int:
    """Swap the sync login check of one route for its coroutine; returns how many were swapped."""
    swapped = 0
    for i, dep in enumerate(route.dependencies):
        if getattr(dep.dependency, "__qualname__", "") == LOGIN_CHECK:
            route.dependencies[i] = dataclasses.replace(dep, dependency=_on_the_loop(dep.dependency))
            swapped += 1
    for sub in route.dependant.dependencies:
        if getattr(sub.call, "__qualname__", "") == LOGIN_CHECK and not getattr(sub.call, "on_loop", False):
            sub.call = _on_the_loop(sub.call)
    return swapped


def _lean_app(app) -> None:
    """Apply both route changes to a Gradio app freshly built, before it serves a request."""
    included = [r for r in app.router.routes if hasattr(r, "original_router")]
    if len(included) != 1 or not hasattr(included[0].original_router, "_routes_version"):
        raise RuntimeError("Gradio's or FastAPI's routing changed: review dashboard/gradio_patches.py")
    router = included[0].original_router
    router.routes[:] = queue_routes_first(router.routes)
    router._routes_version += 1      # FastAPI rebuilds its view of the included routes
    swapped = sum(_login_checks_on_the_loop(r) for r in [*app.router.routes, *router.routes]
                  if isinstance(r, APIRoute))
    if swapped == 0:
        raise RuntimeError("Gradio's login check changed: review dashboard/gradio_patches.py")


def lean_routes() -> None:
    """Make every Gradio app built from now on check logins on the event loop and match the
    queue's routes first; idempotent."""
    create = routes.App.create_app
    if getattr(create, "lean", False):
        return
    if "def login_check(" not in inspect.getsource(create):
        raise RuntimeError("Gradio's login check changed: review dashboard/gradio_patches.py")

    @functools.wraps(create)
    def create_lean_app(*args, **kwargs):
        app = create(*args, **kwargs)
        _lean_app(app)
        return app

    create_lean_app.lean = True
    routes.App.create_app = staticmethod(create_lean_app)


def inline_upload_writes() -> None:
    """Make Gradio write uploaded chunks to their temporary file on the event loop; idempotent."""
    upload_file = route_utils.GradioUploadFile
    if getattr(upload_file.write, "inline", False):
        return
    if "NamedTemporaryFile(delete=False" not in inspect.getsource(route_utils.GradioMultiPartParser):
        raise RuntimeError("Gradio's upload parser changed: review dashboard/gradio_patches.py")

    async def write(self, data: bytes) -> None:
        if self.size is not None:
            self.size += len(data)
        self.file.write(data)

    async def seek(self, offset: int) -> None:
        self.file.seek(offset)

    write.inline = True
    upload_file.write, upload_file.seek = write, seek


def cheap_analytics_inline() -> None:
    """Make Gradio's queue return its cached analytics summary without a thread switch; idempotent."""
    to_thread = queueing.run_sync
    if getattr(to_thread, "inline", False):
        return
    source = inspect.getsource(queueing.Queue)
    if source.count("await run_sync(") != 2 or source.count("self.compute_analytics_summary,") != 2 \
            or "self.events_recorded - self.event_count_at_last_cache" not in source:
        raise RuntimeError("Gradio's queue analytics changed: review dashboard/gradio_patches.py")

    async def run_sync(fn, *args, **kwargs):
        queue = getattr(fn, "__self__", None)
        if getattr(fn, "__name__", "") == "compute_analytics_summary" and isinstance(queue, queueing.Queue) \
                and queue.events_recorded - queue.event_count_at_last_cache < queue.ANAYLTICS_CACHE_FREQUENCY:
            return fn(*args, **kwargs)          # not due: it returns the cached summary
        return await to_thread(fn, *args, **kwargs)

    run_sync.inline = True
    queueing.run_sync = run_sync
