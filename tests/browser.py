"""A headless Chromium driven over the DevTools protocol, for the HTML book's checks.

No browser download and no WebDriver: Debian's ``chromium`` is started with a debugging port,
and each page is loaded, measured and photographed with a few protocol calls over a WebSocket
(``websocket-client``). Used by ``tests/test_html.py``.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import websocket

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_chromium() -> str | None:
    """The path of a Chromium executable, or None."""
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


class Browser:
    """One headless Chromium with one page; use as a context manager."""

    def __init__(self, executable: str):
        self.profile = tempfile.mkdtemp(prefix="buildllm-chromium-")
        self.proc = subprocess.Popen(
            [executable, "--headless=new", "--no-sandbox", "--disable-gpu",
             "--remote-debugging-port=0", "--remote-allow-origins=*",
             f"--user-data-dir={self.profile}", "--hide-scrollbars", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        port = self._port()
        pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
        url = next(p["webSocketDebuggerUrl"] for p in pages if p["type"] == "page")
        self.ws = websocket.create_connection(url, timeout=60)
        self.next_id = 0
        self.call("Page.enable")
        self.call("Runtime.enable")

    def _port(self) -> int:
        """The debugging port, read from the line Chromium prints when it listens."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if m := re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line):
                return int(m.group(1))
            if not line and self.proc.poll() is not None:
                break
        raise RuntimeError("Chromium did not start (no 'DevTools listening' line)")

    def call(self, method: str, **params) -> dict:
        """Send one protocol command and return its result (events met on the way are
        kept in ``self.events``)."""
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def open(self, path: Path, width: int, height: int = 900) -> None:
        """Load a file at a window of ``width`` x ``height`` CSS pixels (a phone below 500)."""
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=width < 500)
        self.call("Page.navigate", url=path.resolve().as_uri())
        self.evaluate("new Promise(r => document.readyState === 'complete' ? r() :"
                      " window.addEventListener('load', () => r()))")
        # MathJax typesets after the load event: wait for it when the page uses it
        self.evaluate("window.MathJax && MathJax.startup ? MathJax.startup.promise : null")

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (a promise is awaited)."""
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True,
                           returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:60]}...: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# What the checks measure in a page, as one JavaScript expression returning an object.
MEASURE = r"""
(() => {
  const article = document.querySelector('article') || document.body;
  const overflowing = (sel) => [...article.querySelectorAll(sel)]
      .filter(e => e.offsetParent !== null && e.scrollWidth > e.clientWidth + 1)
      .map(e => (e.tagName + ' ' + (e.textContent || '').trim().slice(0, 50)));
  const images = [...document.images].filter(i => i.offsetParent !== null);
  return {
    pageWidth: document.documentElement.scrollWidth,
    windowWidth: window.innerWidth,
    math: article.querySelectorAll('span.math, div.math').length,
    unrenderedMath: [...article.querySelectorAll('span.math, div.math')]
        .filter(e => !e.querySelector('mjx-container')).map(e => e.textContent.slice(0, 50)),
    mathErrors: article.querySelectorAll('mjx-merror').length,
    brokenImages: images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src),
    wideCode: overflowing('div.highlight pre, div.cell_output pre'),
    wideTables: overflowing('table'),
    wideMath: overflowing('mjx-container[display="true"]'),
  };
})()
"""
