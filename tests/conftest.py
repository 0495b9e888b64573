"""Fixtures: the real app on a localhost port with a gradio_client, a real Chromium page; the fast lane.

`pytest -m "not slow"` leaves out what starts an app server, a browser, a training run or the
notebook (SLOW_FILES, SLOW_FIXTURES); everything else is the fast lane.
"""
from __future__ import annotations

import pytest

from helpers import ARTIFACTS, CHROMIUM, AppServer, start_app, stop_app

# What makes a test slow: a real app server, a browser, a training run, a command in a process of
# its own (each imports torch again), the notebook.
SLOW_FIXTURES = {"app_server", "client", "page", "trained", "tiny_weights", "fitted"}
SLOW_FILES = {"test_notebook.py", "test_browser.py"}
SLOW_CALLS = ("start_app(", "subprocess", "run_cli(", "run([", "train.train(")


def pytest_collection_modifyitems(items) -> None:
    """Mark the slow lane: tests that need a fixture of SLOW_FIXTURES, sit in SLOW_FILES, or make
    one of SLOW_CALLS in their source are `slow`; `pytest -m "not slow"` runs the rest."""
    import inspect
    for item in items:
        source = inspect.getsource(item.function) if hasattr(item, "function") else ""
        if (item.path.name in SLOW_FILES or SLOW_FIXTURES & set(getattr(item, "fixturenames", ()))
                or any(call in source for call in SLOW_CALLS)):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def app_server(tmp_path_factory) -> AppServer:
    server = start_app(tmp_path_factory.mktemp("app"))
    yield server
    stop_app(server)


@pytest.fixture(scope="session")
def client(app_server):
    from gradio_client import Client
    return Client(app_server.url, verbose=False)


@pytest.fixture
def page():
    """A fresh page of headless Debian Chromium driven by Playwright (which cannot download its own)."""
    from playwright.sync_api import sync_playwright
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 1000})
        finally:
            browser.close()
