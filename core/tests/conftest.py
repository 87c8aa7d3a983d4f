"""Every core test gets a fresh registry, so plugins loaded by one test never leak into another."""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskloom.registry import Registry, set_registry

_EXTRAS = {"pyarrow": "taskloom[parquet]", "datasets": "taskloom[datasets]"}


def _missing_extra(error: BaseException | None) -> str | None:
    """The optional package whose absence caused ``error`` (through its causes), if any."""
    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, ModuleNotFoundError) and (error.name or "").split(".")[0] in _EXTRAS:
            return (error.name or "").split(".")[0]
        error, seen = error.__cause__ or error.__context__, seen + 1
    return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> object:
    """A test that needs pyarrow or datasets skips, naming the extra, where they are not installed.

    ``make test`` installs both, so there every such test runs; a contributor who installed core
    alone sees skips with the reason, not failures.
    """
    try:
        return (yield)
    except Exception as error:
        missing = _missing_extra(error)
        if missing is None:
            raise
        pytest.skip(f"{missing} is not installed: pip install '{_EXTRAS[missing]}' to run this test")


@pytest.fixture(autouse=True)
def _no_user_settings(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own default LLM and config file must not change what a test sees."""
    for variable in ("TASKLOOM_DEFAULT_LLM", "TASKLOOM_CONFIG"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg-config")))


@pytest.fixture(autouse=True)
def _fresh_registry() -> Iterator[None]:
    previous = set_registry(Registry())
    try:
        yield
    finally:
        set_registry(previous)


class FakeSite:
    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        monkeypatch.syspath_prepend(str(root))
        self._modules: list[str] = []
        self._monkeypatch = monkeypatch

    def install(
        self,
        package: str,
        entry_points: dict[str, str],
        modules: dict[str, str],
        version: str = "1.0",
        requires: str = "taskloom>=0.1,<1",
    ) -> None:
        """Write a package: ``entry_points`` name -> "module", ``modules`` name -> source."""
        dist = self.root / f"{package.replace('-', '_')}-{version}.dist-info"
        dist.mkdir()
        metadata = f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n"
        if requires:
            metadata += f"Requires-Dist: {requires}\n"
        (dist / "METADATA").write_text(metadata)
        eps = "[taskloom]\n" + "".join(f"{name} = {target}\n" for name, target in entry_points.items())
        (dist / "entry_points.txt").write_text(eps)
        for name, source in modules.items():
            (self.root / f"{name}.py").write_text(textwrap.dedent(source))
            self._modules.append(name)
            self._monkeypatch.delitem(sys.modules, name, raising=False)
        importlib.invalidate_caches()

    def cleanup(self) -> None:
        for name in self._modules:
            sys.modules.pop(name, None)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSite]:
    """Installed packages made on disk: a ``*.dist-info`` with entry points, as pip leaves them."""
    for variable in ("TASKLOOM_PLUGINS", "TASKLOOM_DISABLE_PLUGINS", "TASKLOOM_STRICT_PLUGINS"):
        monkeypatch.delenv(variable, raising=False)
    fake = FakeSite(tmp_path / "site", monkeypatch)
    yield fake
    fake.cleanup()
