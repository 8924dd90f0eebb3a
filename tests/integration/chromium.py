"""A real headless browser for the tests: Debian's `chromium`, driven through the Chrome DevTools
protocol over its WebSocket (the `websockets` package uvicorn already brings; no selenium, no
browser download). Chromium resolves `*.localhost` to the loopback by itself, so
`http://<bucket>.s3-website.localhost:<port>/` reaches a test gateway's website endpoint.

`ensure_chromium()` installs the Debian package where it is missing (apt-get, as root) or says why
it cannot; `Browser` starts one browser per test session, `Page` is one tab.
"""
from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

CHROMIUM = "chromium"
INSTALL_TIMEOUT_S = 900
START_TIMEOUT_S = 60
COMMAND_TIMEOUT_S = 60


def ensure_chromium() -> str:
    """The path of Debian's chromium, installed with apt-get where missing. Raises RuntimeError
    with the reason when it is missing and cannot be installed here."""
    path = shutil.which(CHROMIUM)
    if path:
        return path
    if shutil.which("apt-get") is None:
        raise RuntimeError("chromium is not installed and this system has no apt-get (Debian's `chromium` needed)")
    if os.geteuid() != 0:
        raise RuntimeError("chromium is not installed and installing it needs root: apt-get install -y chromium")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for args in (["apt-get", "install", "-y", "--no-install-recommends", CHROMIUM],
                 ["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", CHROMIUM]):
        subprocess.run(args, env=env, capture_output=True, timeout=INSTALL_TIMEOUT_S)
        path = shutil.which(CHROMIUM)
        if path:
            return path
    raise RuntimeError("apt-get install -y chromium failed")


class Browser:
    """One headless chromium process with a DevTools port of its own (its profile in a temp dir)."""

    def __init__(self, executable: str):
        self.profile = tempfile.TemporaryDirectory(prefix="pys3-chromium-")
        self.log = open(Path(self.profile.name) / "chromium.log", "wb")
        args = [executable, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--no-proxy-server",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
                f"--user-data-dir={self.profile.name}", "about:blank"]
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        port_file = Path(self.profile.name) / "DevToolsActivePort"
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"chromium did not start: {self.output()[-2000:]}")
            time.sleep(0.1)
        self.port = int(port_file.read_text().split()[0])

    def output(self) -> str:
        return (Path(self.profile.name) / "chromium.log").read_text(errors="replace")

    def new_page(self) -> "Page":
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/json/new?about:blank", method="PUT")
        with urllib.request.urlopen(req, timeout=COMMAND_TIMEOUT_S) as resp:
            target = json.loads(resp.read())
        return Page(self, target["id"], target["webSocketDebuggerUrl"])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        self.profile.cleanup()


class Page:
    """One tab: navigate, evaluate JavaScript, wait for what its DOM shows."""

    def __init__(self, browser: Browser, target_id: str, ws_url: str):
        self.browser, self.target_id = browser, target_id
        self.ws = connect(ws_url, max_size=None, open_timeout=COMMAND_TIMEOUT_S).__enter__()
        self._ids = itertools.count(1)
        self.console: list[str] = []
        self.send("Page.enable")
        self.send("Runtime.enable")

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self._ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        deadline = time.monotonic() + COMMAND_TIMEOUT_S
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if msg.get("method") == "Runtime.consoleAPICalled":
                self.console.append(" ".join(str(a.get("value", a.get("description", "")))
                                             for a in msg["params"].get("args", [])))
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def navigate(self, url: str) -> None:
        result = self.send("Page.navigate", url=url)
        if result.get("errorText"):
            raise RuntimeError(f"navigating to {url}: {result['errorText']}")
        self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'")

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0) -> Any:
        """Wait until `expression` is truthy in the page (it may navigate meanwhile); its value."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = self.evaluate(expression)
            except RuntimeError as exc:   # the page is between two documents
                last = exc
            else:
                if last:
                    return last
            time.sleep(0.1)
        raise TimeoutError(f"{expression!r} still {last!r} after {timeout}s on {self.evaluate('location.href')}")

    def text(self, selector: str) -> str:
        return self.evaluate(f"(document.querySelector({json.dumps(selector)}) || {{}}).textContent || ''")

    def set_file(self, selector: str, path: str) -> None:
        """Choose `path` in a file input, as a user picking it would."""
        obj = self.send("Runtime.evaluate", expression=f"document.querySelector({json.dumps(selector)})")
        self.send("DOM.setFileInputFiles", files=[path], objectId=obj["result"]["objectId"])

    def close(self) -> None:
        self.ws.close()
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{self.browser.port}/json/close/{self.target_id}",
                                   timeout=COMMAND_TIMEOUT_S).close()
        except OSError:
            pass
