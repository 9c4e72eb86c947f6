"""What the preview proxy adds to a request on a warm keep-alive connection.

    .venv/bin/python bench/bench_preview_proxy.py [--requests 4000] [--rounds 10]

One real app (`node`, an HTTP server answering 13 bytes with keep-alive) on loopback, reached
four ways in the same run, round-robin (each round sends requests/rounds requests down each
path, so load from elsewhere falls on all of them alike):

- direct: the client's connection goes to the app;
- tcp relay: through a plain asyncio TCP relay (previews/http_proxy.py: `relay`, the byte
  splice the old TCP proxy did for every connection, and the new one does after a websocket's
  101), on its own loop thread as the proxy's;
- http proxy, public: through `previews.proxy.Proxy` (the preview proxy itself) for a public
  preview: parsing, cookie stripping, framing;
- http proxy, token: the same for a private preview, each request carrying the token cookie.

The client is one blocking socket per path, opened and warmed before the clock starts; each
sample is one request's send to its whole answer read. Prints p50 / p99 / mean per path and the
proxy's p50 overhead over the TCP relay and over direct.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchlib import free_port  # noqa: E402

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "weldr_agent.settings")
# Everything this run writes (its data directory unless one is given, the app's folder), removed
# when it ends.
SCRATCH = Path(tempfile.mkdtemp(prefix="weldr-bench-proxy-"))
os.environ.setdefault("WELDR_ENV_VOL", str(SCRATCH / "vol"))

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402

from previews import tokens  # noqa: E402
from previews.http_proxy import cookie_name, relay  # noqa: E402
from previews.proxy import Proxy  # noqa: E402
from weldr_agent import runner  # noqa: E402

APP_JS = """
require("http").createServer((req, res) => {
  res.setHeader("content-type", "text/plain");
  res.end("hello, bench\\n");
}).listen(Number(process.env.PORT), "127.0.0.1");
"""



def start_app(workdir: Path) -> tuple[runner.Popen[bytes], int]:
    port = free_port()
    script = workdir / "app.js"
    script.write_text(APP_JS)
    process = runner.spawn(["node", str(script)], log_path=workdir / "app.log",
                           env={**os.environ, "PORT": str(port)})
    assert runner.wait_until(lambda: _answers(port), timeout=30), (workdir / "app.log").read_text()
    return process, port


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def start_tcp_relay(app_port: int) -> int:
    """A plain TCP relay on a loop thread of its own, as the old proxy was."""
    port = free_port()
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = await asyncio.open_connection("127.0.0.1", app_port)
        for sock in (writer.get_extra_info("socket"), upstream[1].get_extra_info("socket")):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await relay((reader, writer), upstream)

    async def start() -> None:
        await asyncio.start_server(handle, "127.0.0.1", port)

    asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    return port


class Client:
    """One warm keep-alive connection; `request()` returns seconds for one whole exchange."""

    def __init__(self, port: int, cookie: str = "") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        extra = f"Cookie: {cookie}\r\n" if cookie else ""
        self.request_bytes = (f"GET /bench HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                              f"User-Agent: bench\r\nAccept: */*\r\n{extra}\r\n").encode()

    def request(self) -> float:
        started = time.perf_counter()
        self.sock.sendall(self.request_bytes)
        data = b""
        while True:
            data += self.sock.recv(65536)
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length:")))
                if len(body) >= length:
                    break
        elapsed = time.perf_counter() - started
        assert data.startswith(b"HTTP/1.1 200 "), data[:200]
        return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=4000, help="per path (default 4000)")
    parser.add_argument("--rounds", type=int, default=10, help="round-robin rounds (default 10)")
    args = parser.parse_args()

    settings.PREVIEW_BIND_ADDRESS = "127.0.0.1"
    workdir = SCRATCH / "app"
    workdir.mkdir()
    app, app_port = start_app(workdir)
    proxy = Proxy()
    try:
        public_port, private_port = free_port(), free_port()
        proxy.open(public_port, target=lambda: ("127.0.0.1", app_port), bucket="bench",
                   access="public")
        proxy.open(private_port, target=lambda: ("127.0.0.1", app_port), bucket="bench",
                   access="token")
        token, _ = tokens.token_mint(bucket="bench", port=private_port, ttl_seconds=3600)
        paths = {
            "direct": Client(app_port),
            "tcp relay": Client(start_tcp_relay(app_port)),
            "http proxy, public": Client(public_port),
            "http proxy, token": Client(private_port, cookie=f"{cookie_name(private_port)}={token}"
                                                           "; theme=dark"),
        }
        for client in paths.values():
            for _ in range(200):
                client.request()
        samples: dict[str, list[float]] = {name: [] for name in paths}
        per_round = max(1, args.requests // args.rounds)
        for _ in range(args.rounds):
            for name, client in paths.items():
                samples[name].extend(client.request() for _ in range(per_round))

        load = os.getloadavg()
        print(f"{per_round * args.rounds} requests per path, warm keep-alive connections, "
              f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}, {os.cpu_count()} CPUs")
        print(f"{'path':<22}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}")
        p50 = {}
        for name, values in samples.items():
            values.sort()
            p50[name] = values[len(values) // 2] * 1000
            p99 = values[int(len(values) * 0.99)] * 1000
            print(f"{name:<22}{p50[name]:>9.3f}{p99:>9.3f}{statistics.mean(values) * 1000:>9.3f}")
        for name in ("http proxy, public", "http proxy, token"):
            print(f"{name}: +{p50[name] - p50['direct']:.3f} ms p50 over direct, "
                  f"+{p50[name] - p50['tcp relay']:.3f} ms over the tcp relay "
                  f"(target: at most +1 ms)")
    finally:
        for port in proxy.ports():
            proxy.close(port)
        runner.stop(app, grace=5)
        shutil.rmtree(SCRATCH, ignore_errors=True)


if __name__ == "__main__":
    main()
