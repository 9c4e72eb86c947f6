"""A real PgBouncer (Debian's package) in transaction pooling mode, for one test database."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tests.servers import free_port
from weldr_agent import runner
from weldr_agent.s3 import port_open

PGBOUNCER = "/usr/sbin/pgbouncer"


@dataclass
class Pgbouncer:
    url: str

    @classmethod
    @contextmanager
    def start(cls, database_url: str, name: str) -> Iterator[Pgbouncer]:
        """PgBouncer on a free loopback port forwarding `name` to `database_url`'s server."""
        target = urlsplit(database_url)
        port = free_port()
        # Its own folder, reachable by the postgres user (pytest's tmp_path is root's alone).
        root = Path(tempfile.mkdtemp(prefix="weldr-pgbouncer-"))
        root.chmod(0o755)
        # Its own pool is larger than the agent's: the bound measured must be the agent's.
        (root / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"{name} = host={target.hostname} port={target.port} dbname={name}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {root / 'users.txt'}\n"
            "pool_mode = transaction\nmax_client_conn = 500\ndefault_pool_size = 50\n"
            "server_reset_query =\n"
            f"logfile = {root / 'pgbouncer.log'}\n")
        (root / "users.txt").write_text(f'"{target.username}" ""\n')
        user = pwd.getpwnam("postgres")
        for path in (root, root / "pgbouncer.ini", root / "users.txt"):
            os.chown(path, user.pw_uid, user.pw_gid)
        # PgBouncer refuses to run as root; -u drops to the postgres user.
        process = runner.spawn([PGBOUNCER, "-u", "postgres", str(root / "pgbouncer.ini")],
                               log_path=root / "stdout.log")
        try:
            if not runner.wait_until(lambda: port_open("127.0.0.1", port)
                                     or process.poll() is not None, timeout=20) \
                    or process.poll() is not None:
                raise RuntimeError(f"pgbouncer did not start: {(root / 'stdout.log').read_text()}")
            yield cls(f"postgres://{target.username}@127.0.0.1:{port}/{name}")
        finally:
            runner.stop(process, grace=10)
            shutil.rmtree(root, ignore_errors=True)
