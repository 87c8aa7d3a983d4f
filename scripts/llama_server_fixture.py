"""Pytest plugin: a session-scoped ``llama_server`` fixture serving a real llama.cpp server.

Load it from a test suite's ``conftest.py``::

    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[N] / "scripts"))  # the repo's scripts/
    pytest_plugins = ["llama_server_fixture"]

or ``pytest -p llama_server_fixture`` with ``scripts/`` on ``sys.path``. The first use downloads the
model and builds ``llama-server`` (about 5 minutes, then cached; see ``llama_server.py``). The fixture
never skips: a test marked ``llama_server`` that cannot get a server fails.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

try:
    from llama_server import LlamaServer
except ModuleNotFoundError as missing:  # a virtualenv without taskloom-llamacpp, e.g. a third-party package's
    _MISSING: ModuleNotFoundError | None = missing

    class LlamaServer:  # type: ignore[no-redef]
        """Stands in for the annotation; the fixture says what is missing if a test asks for a server."""

else:
    _MISSING = None

__all__ = ["LlamaServer", "llama_server"]


def pytest_configure(config: pytest.Config) -> None:
    # Registered here too, so suites outside the repo root's pytest configuration can use the marker.
    config.addinivalue_line("markers", "llama_server: tests against a real llama.cpp server")


@pytest.fixture(scope="session")
def llama_server() -> Iterator[LlamaServer]:
    """A started :class:`LlamaServer` (``.base_url``, ``.openai_base_url``), shared by the session."""
    if _MISSING is not None:
        pytest.fail(f"a real llama-server needs taskloom-llamacpp installed ({_MISSING})")
    with LlamaServer() as server:
        yield server
