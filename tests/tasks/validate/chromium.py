"""Open an HTML file in headless Chromium over the DevTools protocol and report what happened.

Console errors, uncaught exceptions, failed loads, any request that is not a data: or file:
URL (the report must need no network), whether every <img> decoded, and a screenshot. The
DevTools websocket is driven with ``websockets`` (already installed as a Prefect dependency),
so no browser-automation package is needed. Debian's package: ``apt-get install chromium``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--remote-debugging-port=0", "--remote-allow-origins=*"]
NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

IMAGES_JS = """JSON.stringify({
  images: Array.from(document.images).map(i => ({ok: i.complete && i.naturalWidth > 0,
                                                width: i.naturalWidth})),
  sections: Array.from(document.querySelectorAll('section[id]')).map(s => s.id),
  svgs: document.querySelectorAll('svg').length,
  title: document.title,
  height: document.documentElement.scrollHeight,
})"""


def find_chromium() -> str | None:
    return next((path for name in NAMES if (path := shutil.which(name))), None)


@dataclass
class PageResult:
    console_errors: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    failed_loads: list[str] = field(default_factory=list)
    network_requests: list[str] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)
    svgs: int = 0
    title: str = ""
    height: int = 0


class _Session:
    def __init__(self, url: str) -> None:
        from websockets.sync.client import connect

        self.socket = connect(url, max_size=None, open_timeout=30)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, timeout: float = 60.0, **params) -> dict:
        self.next_id += 1
        ident = self.next_id
        self.socket.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.socket.recv(timeout=max(deadline - time.monotonic(), 0.1)))
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method: str, timeout: float = 60.0) -> dict:
        for event in self.events:
            if event.get("method") == method:
                return event
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.socket.recv(timeout=max(deadline - time.monotonic(), 0.1)))
            self.events.append(message)
            if message.get("method") == method:
                return message

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.socket.close()


def _port(profile: Path, process: subprocess.Popen, timeout: float) -> int:
    marker = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if marker.is_file() and marker.read_text().strip():
            return int(marker.read_text().splitlines()[0])
        if process.poll() is not None:
            raise RuntimeError(f"chromium exited with {process.returncode}")
        time.sleep(0.1)
    raise TimeoutError("chromium did not open its DevTools port")


def open_page(html: Path, screenshot: Path, *, width: int = 1280, height: int = 1600,
              timeout: float = 90.0) -> PageResult:
    """Load ``html`` (a file), collect problems, save a PNG screenshot of the first screen."""
    binary = find_chromium()
    if binary is None:
        raise FileNotFoundError("no chromium on PATH")
    with tempfile.TemporaryDirectory(prefix="chromium-profile-",
                                     ignore_cleanup_errors=True) as profile:
        # Its own session, so the browser and its helper processes end together (below).
        process = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        session = None
        try:
            port = _port(Path(profile), process, timeout)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
                targets = json.loads(r.read())
            page = next(t for t in targets if t.get("type") == "page")
            session = _Session(page["webSocketDebuggerUrl"])
            for domain in ("Page", "Runtime", "Log", "Network"):
                session.call(f"{domain}.enable")
            session.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                         deviceScaleFactor=1, mobile=False)
            session.call("Page.navigate", url=html.resolve().as_uri())
            session.wait_for("Page.loadEventFired", timeout)
            info = json.loads(session.call("Runtime.evaluate", expression=IMAGES_JS,
                                           returnByValue=True)["result"]["value"])
            shot = session.call("Page.captureScreenshot", format="png")
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
            return _result(session.events, info)
        finally:
            if session is not None:
                session.close()
            _stop(process)


def _stop(process: subprocess.Popen) -> None:
    """End the browser's process group (only the processes this module started)."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _result(events: list[dict], info: dict) -> PageResult:
    result = PageResult(images=info["images"], sections=info["sections"], svgs=info["svgs"],
                        title=info["title"], height=info["height"])
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            result.console_errors.append(json.dumps(params.get("args", []))[:300])
        elif method == "Runtime.exceptionThrown":
            result.exceptions.append(json.dumps(params.get("exceptionDetails", {}))[:300])
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            result.console_errors.append(params["entry"].get("text", "")[:300])
        elif method == "Network.loadingFailed":
            result.failed_loads.append(params.get("errorText", ""))
        elif method == "Network.requestWillBeSent":
            url = params.get("request", {}).get("url", "")
            if not url.startswith(("data:", "file:", "about:")):
                result.network_requests.append(url)
    return result
