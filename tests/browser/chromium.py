"""Headless Chromium driven over the Chrome DevTools Protocol (its own websocket), and a TCP
proxy whose connections a test can cut: what a browser on a flaky network sees."""

from __future__ import annotations

import itertools
import json
import shutil
import socket
import tempfile
import threading
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import connect as ws_connect

from weldr_agent import runner

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", "--remote-debugging-port=0")


class Chromium:
    """One headless Chromium with a fresh profile and one page, driven by CDP commands."""

    def __init__(self) -> None:
        self.profile = Path(tempfile.mkdtemp(prefix="weldr-chromium-"))
        self.process = runner.spawn(["chromium", *FLAGS, f"--user-data-dir={self.profile}",
                                     "about:blank"], log_path=self.profile / "chromium.log")
        active = self.profile / "DevToolsActivePort"
        assert runner.wait_until(lambda: active.exists() and active.read_text().strip(),
                                 timeout=60), (self.profile / "chromium.log").read_text()
        port = int(active.read_text().split()[0])
        targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        page = next(target for target in targets if target["type"] == "page")
        self.connection = ws_connect(page["webSocketDebuggerUrl"], max_size=None,
                                     open_timeout=30)
        self.socket = self.connection.__enter__()
        self.ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one CDP command and return its result (events in between are ignored)."""
        number = next(self.ids)
        self.socket.send(json.dumps({"id": number, "method": method, "params": params}))
        while True:
            reply = json.loads(self.socket.recv(timeout=60))
            if reply.get("id") == number:
                assert "error" not in reply, reply
                return reply["result"]

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def set_cookie(self, *, name: str, value: str, url: str) -> None:
        assert self.call("Network.setCookie", name=name, value=value, url=url,
                         httpOnly=True, sameSite="Lax")["success"]

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        assert runner.wait_until(
            lambda: self.evaluate("document.readyState") == "complete"
            and self.evaluate("location.href") == url, timeout=30)

    def wait_for(self, expression: str, timeout: float = 60) -> Any:
        """Poll a page expression until it is truthy; return its value."""
        found: list[Any] = []

        def ready() -> bool:
            found[:] = [self.evaluate(expression)]
            return bool(found[0])

        assert runner.wait_until(ready, timeout=timeout, interval=0.1), \
            f"{expression} still false; page state: {self.evaluate('JSON.stringify(state)')}"
        return found[0]

    def close(self) -> None:
        self.connection.__exit__(None, None, None)
        runner.stop(self.process, grace=10)
        shutil.rmtree(self.profile, ignore_errors=True)


class CuttableProxy:
    """127.0.0.1:port → target port; `cut()` drops every open connection (a network cut)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.cuts = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=10)
            except OSError:  # the agent is down: the browser sees its connection refused
                client.close()
                continue
            upstream.settimeout(None)
            with self.lock:
                self.open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def cut(self) -> None:
        """Reset every connection in both directions, as a dropped network link would."""
        with self.lock:
            sockets, self.open = list(self.open), set()
            self.cuts += 1
        for sock in sockets:
            try:
                # SO_LINGER 0: close with a reset, not an orderly end of stream.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                # shutdown() also wakes the pump blocked in recv() on it (close() would not).
                sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            except OSError:
                pass

    def close(self) -> None:
        self.listener.close()
        self.cut()
