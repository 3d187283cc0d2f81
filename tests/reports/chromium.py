"""A small DevTools client over `--remote-debugging-pipe`: open a page, see what it did.

Headless Chromium reads commands on fd 3 and writes answers and events on fd 4, each message a
JSON object ended by NUL. `open_page` loads one URL in a fresh profile and reports the page's
network requests, console messages, uncaught exceptions and log entries, and the values of a
few JavaScript expressions evaluated after the load event.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--remote-debugging-pipe",
)


def find_chromium() -> str | None:
    for path in CANDIDATES:
        if Path(path).is_file() and os.access(path, os.X_OK):
            return path
    return shutil.which("chromium")


@dataclass
class PageRun:
    requests: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    log_errors: list[str] = field(default_factory=list)
    values: list[Any] = field(default_factory=list)


class _Pipe:
    def __init__(self, proc: subprocess.Popen[bytes], write_fd: int, read_fd: int) -> None:
        self.proc, self.write_fd, self.read_fd = proc, write_fd, read_fd
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session: str | None = None,
        *,
        timeout_s: float = 30.0,
    ) -> dict[str, Any]:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.write_fd, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout_s
        while True:
            answer = self.read(deadline)
            if answer.get("id") == self.next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return dict(answer.get("result", {}))
            self.events.append(answer)

    def read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self.read_fd, 65536)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return dict(json.loads(raw))

    def wait_for(self, method: str, session: str, *, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(
            e.get("method") == method and e.get("sessionId") == session for e in self.events
        ):
            self.events.append(self.read(deadline))


def open_page(chromium: str, url: str, expressions: list[str]) -> PageRun:
    """Load `url`, then evaluate each expression in the page; what the page did."""
    with _browser(chromium) as pipe:
        session = _load(pipe, url)
        return _observe(pipe, session, expressions)


def screenshot(
    chromium: str, url: str, path: Path, *, width: int = 1280, max_height: int | None = None
) -> int:
    """A PNG of the page at `width` CSS pixels, whole or its top `max_height`; the height."""
    with _browser(chromium) as pipe:
        session = _load(pipe, url)
        size = pipe.send("Page.getLayoutMetrics", session=session)["cssContentSize"]
        height = int(size["height"]) + 1
        if max_height is not None:
            height = min(height, max_height)
        pipe.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        shot = pipe.send(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
            },
            session=session,
        )
        path.write_bytes(base64.b64decode(shot["data"]))
        return height


@contextlib.contextmanager
def _browser(chromium: str) -> Iterator[_Pipe]:
    """Headless Chromium in a fresh profile, its DevTools pipe on fds 3 (in) and 4 (out)."""
    to_chrome_r, to_chrome_w = os.pipe()
    from_chrome_r, from_chrome_w = os.pipe()

    def child_fds() -> None:  # fds 3 and 4, whatever numbers the pipes got
        high_r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
        high_w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
        os.dup2(high_r, 3)
        os.dup2(high_w, 4)

    with tempfile.TemporaryDirectory(prefix="kv2d1-chromium-") as profile:
        proc = subprocess.Popen(
            [chromium, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=False,
            preexec_fn=child_fds,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        pipe = _Pipe(proc, to_chrome_w, from_chrome_r)
        try:
            yield pipe
        finally:
            with contextlib.suppress(RuntimeError, TimeoutError, OSError):
                pipe.send("Browser.close", timeout_s=5)
            os.close(to_chrome_w)
            os.close(from_chrome_r)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _load(pipe: _Pipe, url: str) -> str:
    """A new tab with the Network, Runtime, Log and Page domains on, `url` loaded; its session."""
    target = pipe.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = str(
        pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    )
    for domain in ("Network", "Runtime", "Log", "Page"):
        pipe.send(f"{domain}.enable", session=session)
    pipe.send("Page.navigate", {"url": url}, session=session)
    pipe.wait_for("Page.loadEventFired", session)
    return session


def _observe(pipe: _Pipe, session: str, expressions: list[str]) -> PageRun:
    run = PageRun()
    for expression in expressions:
        result = pipe.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=session
        )
        if "exceptionDetails" in result:
            run.exceptions.append(str(result["exceptionDetails"]))
        run.values.append(result.get("result", {}).get("value"))
    for event in pipe.events:
        if event.get("sessionId") != session:
            continue
        params = event.get("params", {})
        method = event.get("method")
        if method == "Network.requestWillBeSent":
            run.requests.append(params["request"]["url"])
        elif method == "Runtime.consoleAPICalled":
            run.console.append(f"{params.get('type')}: {params.get('args')}")
        elif method == "Runtime.exceptionThrown":
            run.exceptions.append(str(params.get("exceptionDetails")))
        elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
            run.log_errors.append(f"{params['entry']['level']}: {params['entry'].get('text')}")
    return run
