"""A real ``redis-server`` on a free loopback port for the Redis store's tests (Debian's redis-server).

Import as ``from redis_server import RedisServer`` (like ``support``). The fixture ``redis_url`` in
conftest.py starts one per test session and empties it before each test; without the binary the tests skip,
unless ``CERM_REDIS_REQUIRED=1`` (scripts/test.sh sets it and installs the package), where they fail.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """``redis-server`` in a subprocess: no persistence, loopback only; ``url`` names database 0."""

    def __init__(self, maxmemory: str | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not installed (apt-get install redis-server)")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="cerm-redis-"))
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.dir), "--logfile", str(self.dir / "redis.log")]
        if maxmemory:
            args += ["--maxmemory", maxmemory, "--maxmemory-policy", "noeviction"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        deadline = time.monotonic() + 20
        while not self.ping():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server on port {self.port} did not start; see {self.dir / 'redis.log'}")
            time.sleep(0.05)

    def client(self):
        import redis

        return redis.Redis.from_url(self.url, decode_responses=True)

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def flush(self) -> None:
        self.client().flushall()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def redis_required() -> bool:
    return os.environ.get("CERM_REDIS_REQUIRED") == "1"
