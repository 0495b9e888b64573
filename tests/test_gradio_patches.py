"""dashboard/gradio_patches.py: each correction to Gradio's internals does what it says, and changes
nothing a visitor or an API client can tell apart, checked on real Gradio apps and servers."""
from __future__ import annotations

import asyncio
import inspect
import re

import httpx
import pytest
from helpers import free_port

gr = pytest.importorskip("gradio")


def _app_routes(demo):
    """The route list of the Gradio router inside a freshly built app of `demo` (patched or not)."""
    from gradio.routes import App
    app = App.create_app(demo)
    included = [r for r in app.router.routes if hasattr(r, "original_router")]
    return app, included[0].original_router.routes


def _first_match(routes, method: str, path: str):
    """The route Starlette's rules run for a request: the first full match, else the first partial."""
    partial = None
    for r in routes:
        if r.path_regex.match(path):
            if method in r.methods:
                return r
            partial = partial or r
    return partial


def _example_paths(template: str) -> list[str]:
    """Concrete paths a route template matches: each parameter filled with a few values."""
    fills = ["x", "v2", "upload", "a.b"]
    out = []
    for fill in fills:
        path = re.sub(r"{[^}:]+:path}", fill + "/y", template)
        out.append(re.sub(r"{[^}]+}", fill, path))
    return out


def test_may_overlap_answers_yes_when_two_templates_can_match_one_path():
    from dashboard.gradio_patches import may_overlap
    assert may_overlap("/gradio_api/upload", "/gradio_api/{anything}")
    assert may_overlap("/gradio_api/call/{api_name}/{event_id}", "/gradio_api/call/v2/{api_name}")
    assert may_overlap("/svelte/{path:path}", "/svelte/a/b/c")
    assert may_overlap("/gradio_api/file={path:path}", "/gradio_api/file=x")
    assert not may_overlap("/gradio_api/upload", "/gradio_api/file={path_or_url:path}")
    assert not may_overlap("/gradio_api/upload", "/gradio_api/queue/join")
    assert not may_overlap("/gradio_api/call/{api_name}", "/gradio_api/call/{api_name}/{event_id}")


def test_the_queue_routes_come_first_and_every_path_keeps_its_route():
    """Every method and path that any of Gradio's routes matches is answered by the same route
    before and after the reordering; the queue's routes are tried within the first ten."""
    from dashboard.gradio_patches import QUEUE_ROUTES, queue_routes_first
    with gr.Blocks() as demo:
        gr.Textbox()
    _, routes = _app_routes(demo)
    before = list(routes)
    after = queue_routes_first(before)
    assert sorted(map(id, after)) == sorted(map(id, before))
    for method, path in QUEUE_ROUTES:
        assert [i for i, r in enumerate(after) if r.path == path and method in r.methods][0] < 10
    checked = 0
    for template in {r.path for r in before}:
        for path in _example_paths(template):
            for method in ("GET", "POST", "HEAD"):
                assert _first_match(after, method, path) is _first_match(before, method, path), (method, path)
                checked += 1
    assert checked > 100


def test_a_route_that_could_take_a_queue_path_keeps_it():
    """A catch-all declared before the upload route would answer /gradio_api/upload: it must stay first."""
    from fastapi.routing import APIRoute

    from dashboard.gradio_patches import queue_routes_first
    with gr.Blocks() as demo:
        gr.Textbox()
    _, routes = _app_routes(demo)
    catch_all = APIRoute("/gradio_api/{anything}", lambda anything: anything, methods=["POST"])
    reordered = queue_routes_first([catch_all, *routes])
    assert _first_match(reordered, "POST", "/gradio_api/upload") is catch_all
    assert reordered.index(catch_all) < [r.path for r in reordered].index("/gradio_api/upload")


def test_the_login_check_runs_on_the_event_loop_and_still_refuses_strangers():
    """A real server with a password: without logging in, the upload and the call are refused (401);
    after logging in they are served; and the check is a coroutine on every route that had it."""
    from dashboard.gradio_patches import LOGIN_CHECK, lean_routes
    lean_routes()
    lean_routes()                                                   # idempotent
    with gr.Blocks() as demo:
        box = gr.Textbox()
        gr.Button().click(lambda s: s.upper(), box, box, api_name="shout")
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, auth=("ada", "lovelace"), prevent_thread_lock=True,
                quiet=True)
    try:
        checks = [d.dependency for r in demo.app.router.routes if hasattr(r, "original_router")
                  for x in r.original_router.routes for d in getattr(x, "dependencies", [])
                  if getattr(d.dependency, "__qualname__", "") == LOGIN_CHECK]
        assert checks and all(inspect.iscoroutinefunction(c) for c in checks)
        base = f"http://127.0.0.1:{port}/gradio_api"
        with httpx.Client(timeout=30) as stranger:
            assert stranger.post(f"{base}/upload", files={"files": ("a.txt", b"hi")}).status_code == 401
            assert stranger.post(f"{base}/call/shout", json={"data": ["hi"]}).status_code == 401
        with httpx.Client(timeout=30) as user:
            assert user.post(f"http://127.0.0.1:{port}/login", data={"username": "ada", "password": "lovelace"}
                             ).status_code == 200
            assert user.post(f"{base}/upload", files={"files": ("a.txt", b"hi")}).status_code == 200
            event = user.post(f"{base}/call/shout", json={"data": ["hi"]}).json()["event_id"]
            assert '"HI"' in user.get(f"{base}/call/shout/{event}").text
    finally:
        demo.close()


def test_an_upload_written_on_the_loop_arrives_whole(tmp_path):
    """A file of several network chunks, uploaded to a real server: the server's copy is byte for
    byte the one sent, and its size as Gradio counted it."""
    from dashboard.gradio_patches import inline_upload_writes
    inline_upload_writes()
    inline_upload_writes()                                          # idempotent
    with gr.Blocks() as demo:
        gr.File()
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        content = bytes(range(256)) * 4096 + b"end"                 # 1 MiB and 3 bytes
        r = httpx.post(f"http://127.0.0.1:{port}/gradio_api/upload", files={"files": ("blob.bin", content)}, timeout=60)
        assert r.status_code == 200
        from pathlib import Path
        assert Path(r.json()[0]).read_bytes() == content
    finally:
        demo.close()


def test_a_due_analytics_summary_still_goes_to_a_thread_and_others_do_not():
    import threading

    from gradio import queueing

    from dashboard.gradio_patches import cheap_analytics_inline
    cheap_analytics_inline()
    cheap_analytics_inline()                                        # idempotent
    with gr.Blocks() as demo:
        gr.Textbox()
    queue = queueing.Queue(live_updates=True, concurrency_count=1, update_intervals=1, max_size=None, blocks=demo,
                           default_concurrency_limit=1)
    seen = []
    queue.compute_analytics_summary = _recording(queue.compute_analytics_summary, seen)
    loop_thread = []

    async def go():
        loop_thread.append(threading.get_ident())
        queue.events_recorded = queue.event_count_at_last_cache = 5
        await queueing.run_sync(queue.compute_analytics_summary, [])          # cached: on the loop
        queue.events_recorded += queue.ANAYLTICS_CACHE_FREQUENCY
        await queueing.run_sync(queue.compute_analytics_summary, [])          # due: a thread
    asyncio.run(go())
    assert seen[0] == loop_thread[0] and seen[1] != loop_thread[0]


def _recording(fn, seen):
    import threading

    def compute_analytics_summary(records):
        seen.append(threading.get_ident())
        return fn(records)
    compute_analytics_summary.__self__ = fn.__self__
    return compute_analytics_summary
