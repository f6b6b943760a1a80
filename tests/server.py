"""A real gunicorn (the production gunicorn.conf.py) on a free 127.0.0.1 port, for tests."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent


def process_tree(root: int) -> list[int]:
    """``root`` and every process below it (workers, their helpers), read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                # The name may hold spaces and parentheses: fields start after the last ')'.
                ppid = int(stat.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stats(pids: list[int]) -> Iterator[list[bytes]]:
    """The fields of /proc/PID/stat after the command's name (field 3 of stat(5) first),
    for each of ``pids`` still there."""
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as stat:
                yield stat.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue


def tree_cpu(pids: list[int]) -> float:
    """CPU seconds of ``pids``, each with its reaped children's (utime, stime, cu-, cstime)."""
    ticks = sum(int(value) for fields in _stats(pids)
                for value in fields[11:15])  # fields 14–17 of stat(5)
    return ticks / CLK_TCK


def tree_faults(pids: list[int]) -> tuple[int, float]:
    """Minor page faults (served without I/O) of ``pids`` and their reaped children, and
    their CPU seconds in the kernel (stime, cstime)."""
    faults = ticks = 0
    for fields in _stats(pids):
        faults += int(fields[7]) + int(fields[8])  # fields 10–11 of stat(5)
        ticks += int(fields[12]) + int(fields[14])  # fields 15 and 17
    return faults, ticks / CLK_TCK


def cpu_stall() -> float:
    """Seconds for which some runnable task of this machine has waited for a CPU since boot
    (the "some" line of Linux's /proc/pressure/cpu); 0.0 where the kernel does not say."""
    try:
        with open("/proc/pressure/cpu", "rb") as pressure:
            return int(pressure.readline().rsplit(b"total=", 1)[1]) / 1e6
    except (OSError, IndexError, ValueError):
        return 0.0


QUIET_FAULT_S = 3e-6  # what a page fault costs this machine when its memory is its own


class Strain(NamedTuple):
    """What the machine made a request pay besides its own work: ``Strain.now(pids)``
    before and after it, then ``after - before``.

    ``cpu_wait``: the growth of ``cpu_stall`` is how long a busy machine (another job, a
    second suite) held the request back. A timed assertion allows that on top of its fixed
    slack, so it stays strict on a quiet machine (where a request stalls 5–50 ms) without
    failing on a shared one (measured: 1.3–1.5 s of a 2 s request with three busy loops).

    ``faults`` and ``kernel_s``: ``tree_faults`` of the server's tree. This machine's page
    faults cost 1.3–3.7 µs each (measured per worker); now and then, when it is given
    memory its host had taken back, 10–40 µs, and a 32 MiB answer then spends up to a
    second more in the kernel building, storing and sending copies of itself, which no CPU
    pressure shows. ``allowed`` counts the server's kernel time beyond ``QUIET_FAULT_S``
    per fault as the machine's too: on a quiet machine that is 0–0.012 s (measured on 11
    of ``make hostile``'s large requests). It also counts the server's other kernel work
    (its writes, its sockets), so it cannot tell a service that starts making many more
    system calls from a slow machine."""

    cpu_wait: float = 0.0
    faults: int = 0
    kernel_s: float = 0.0

    @classmethod
    def now(cls, pids: list[int]) -> Strain:
        return cls(cpu_stall(), *tree_faults(pids))

    @property
    def allowed(self) -> float:
        """Seconds a timed assertion allows on top of its fixed slack: the time the request
        waited for a CPU, and the server's kernel time beyond a quiet machine's faults."""
        return self.cpu_wait + max(0.0, self.kernel_s - self.faults * QUIET_FAULT_S)

    def __sub__(self, before: Strain) -> Strain:
        return Strain(*(now - then for now, then in zip(self, before, strict=True)))

    def __str__(self) -> str:
        return (f"{self.cpu_wait:.2f} s waiting for a CPU; {self.faults:,} page faults, "
                f"{self.kernel_s:.2f} s in the kernel")


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # gone already
        os.kill(pid, signum)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, workdir: Path, workers: int = 2, app: str = "wsgi:app",
                 root: Path = ROOT, **settings: str):
        """``root``: the source tree to serve (another checkout, for a before/after
        benchmark); its ``app`` package is imported from there."""
        self.workers, self.app, self.root = workers, app, root
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.env = {**os.environ, "PORT": str(self.port), "WEB_CONCURRENCY": str(workers),
                    "RUNNER_STORE_PATH": str(workdir / "runner.sqlite3"),
                    "RUNNER_LOG_FILE": str(workdir / "log" / "app.log"),
                    "PROMETHEUS_MULTIPROC_DIR": str(workdir / "metrics"),
                    **{f"RUNNER_{k}": v for k, v in settings.items()}}
        self.env.pop("GUNICORN_RELOAD", None)
        self.process: subprocess.Popen | None = None

    def flask(self, *args: str) -> str:
        """Run ``flask --app wsgi …`` against this server's store."""
        out = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", *args],
                             cwd=self.root, env=self.env, capture_output=True, text=True,
                             check=True)
        return out.stdout.strip()

    def start(self) -> Server:
        self.output = open(self.workdir / "gunicorn.out", "wb")  # noqa: SIM115 - closed in stop
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", self.app],
            cwd=self.root, env=self.env, stdout=self.output, stderr=subprocess.STDOUT)
        # Ready when every worker has installed its signal handlers: a SIGTERM that
        # reaches a worker still booting is lost (it still has the master's handlers).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self.log_tail()}")
            if self.log_tail(10_000).count("worker ready") >= self.workers:
                return self
            time.sleep(0.05)
        raise RuntimeError("gunicorn did not start")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process:
            self.output.close()

    def kill(self) -> None:
        """SIGKILL the master and everything below it: a quick end to a server left busy.

        Every process of the tree is stopped first, until no new one appears, so
        none can start a helper that would outlive the kill."""
        if not self.process:
            return
        stopped: set[int] = set()
        while self.process.poll() is None:
            found = set(self.tree_pids()) - stopped
            if not found:
                break
            for pid in found:
                _signal(pid, signal.SIGSTOP)
            stopped |= found
        for pid in stopped:
            _signal(pid, signal.SIGKILL)
        for pid in stopped:
            _signal(pid, signal.SIGCONT)
        self.process.wait()
        self.output.close()

    def tree_pids(self) -> list[int]:
        """The master, its workers and whatever they started (code-transform helpers)."""
        return process_tree(self.process.pid)

    def log_tail(self, lines: int = 30) -> str:
        path = self.workdir / "gunicorn.out"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True,
                             text=True)
        return [int(pid) for pid in out.stdout.split()]

    def text(self, path: str) -> str:
        with urllib.request.urlopen(self.base + path, timeout=10) as response:
            return response.read().decode()

    def metrics(self, until: Callable[[str], bool], within: float = 2.0) -> str:
        """/metrics once ``until(text)`` holds, or the last scrape after ``within`` seconds:
        each worker writes its counts up to a second late."""
        deadline = time.monotonic() + within
        while True:
            text = self.text("/metrics")
            if until(text) or time.monotonic() > deadline:
                return text
            time.sleep(0.05)

    def request(self, method: str, path: str, body=None, token: str | None = "dev-token",
                headers: dict | None = None, timeout: float = 30) -> tuple[int, dict]:
        """One request; returns ``(status, parsed JSON body)``."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            with error:
                return error.code, json.loads(error.read())


def raw_exchange(port, data: bytes, timeout=10) -> tuple[int, dict, bytes]:
    """Send bytes as they are; the status, headers and body of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body
