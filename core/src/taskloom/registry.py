"""Names to classes: lazy, cached, conflict-checked.

Lookup goes built-ins first, then the entry point named like the thing asked for, then every
other plugin, so ``get_llm("openai")`` imports one plugin, not all. Each plugin is loaded in its
own ``try``: a broken one is recorded with its package and version and the rest keep working.
Two packages registering one name make that name an error naming both; neither wins by
install order.
"""

from __future__ import annotations

import inspect
import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import pluggy

from taskloom import hookspecs, plugins
from taskloom._version import __version__
from taskloom.commands import Command
from taskloom.component import Component, defined_class
from taskloom.errors import PluginConflictError, PluginError, UnknownNameError
from taskloom.llms.base import LLM
from taskloom.pipeline.base import Sink, Source
from taskloom.pipeline.executors import PipelineExecutor
from taskloom.plugins import PluginRecord
from taskloom.steps import Step
from taskloom.tasks.base import Task

logger = logging.getLogger("taskloom.plugins")

Kind = Literal["llm", "task", "step", "source", "sink", "executor", "command"]
C = TypeVar("C", bound=type)
_BASES: dict[Kind, type] = {
    "llm": LLM,
    "task": Task,
    "step": Step,
    "source": Source,
    "sink": Sink,
    "executor": PipelineExecutor,
    "command": Command,
}
_HOOKS: dict[Kind, str] = {
    "llm": "register_llms",
    "task": "register_tasks",
    "step": "register_steps",
    "source": "register_sources",
    "sink": "register_sinks",
    "executor": "register_executors",
    "command": "register_commands",
}
_LABEL: dict[Kind, str] = {
    "llm": "LLM",
    "task": "task",
    "step": "step",
    "source": "source",
    "sink": "sink",
    "executor": "executor",
    "command": "command",
}
BUILTINS = "taskloom"


def describe_class(cls: type) -> str:
    """First paragraph of a class docstring, on one line."""
    doc = inspect.getdoc(cls) or ""
    first = " ".join(doc.split("\n\n", 1)[0].split())
    return re.sub(r":\w+:`~?([^`]+)`", r"\1", first).replace("``", "")


@dataclass(frozen=True)
class Registration:
    """One registered name: which class, and which plugin and package put it there."""

    kind: Kind
    name: str
    cls: type
    plugin: str
    package: str
    version: str
    aliases: tuple[str, ...] = ()
    description: str = ""

    def origin(self) -> str:
        return f"{self.package} {self.version} (entry point {self.plugin!r})"


class _Register(Generic[C]):
    """The callable a hook receives; it knows which plugin is registering."""

    kind: Kind

    def __init__(self, sink: list[Registration], plugin: str, package: str, version: str) -> None:
        self._sink = sink
        self._plugin = plugin
        self._package = package
        self._version = version

    def __call__(
        self,
        name_or_cls: str | C,
        cls: C | None = None,
        *,
        aliases: Iterable[str] = (),
        description: str | None = None,
    ) -> None:
        """``register(MyClass)``: the name is the class's ``registry_name``, written once.

        ``register("name", MyClass)`` is accepted too, for a class that declares the same name
        or none (it then takes this one), so a plugin's name and its dumps can never disagree.
        """
        base = _BASES[self.kind]
        if cls is None:
            cls, name = name_or_cls, None  # type: ignore[assignment]
        else:
            name = name_or_cls if isinstance(name_or_cls, str) else None
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise PluginError(
                f"{self._package} registered {name or cls!r} as a {self.kind}, but {cls!r} is not a "
                f"subclass of taskloom.{'plugin.' if base is Command else ''}{base.__name__}."
            )
        declared = cls.own_registry_name() if issubclass(cls, Component) else None
        if name is None:
            name = declared or (
                str(getattr(cls, "registry_name", "") or "") if not issubclass(cls, Component) else None
            )
            if not name:
                raise PluginError(
                    f"{self._package} registered {cls.__qualname__} without a name: declare "
                    f'`registry_name = "<name>"` on the class (or call register("<name>", {cls.__qualname__})).'
                )
        elif declared is not None and declared != name:
            raise PluginError(
                f"{self._package} registers {cls.__qualname__} as {name!r}, but the class declares "
                f"registry_name = {declared!r}; the name is written once: use register({cls.__qualname__})."
            )
        elif declared is None and issubclass(cls, Component):
            type.__setattr__(cls, "registry_name", name)  # the registered name is now the class's too
        if issubclass(cls, Component) and self._plugin != BUILTINS:
            # Components build their validators on first use (defer_build); a plugin's are built
            # now, so a class that cannot be built fails its plugin's load, named with its package.
            cls.model_rebuild()
        self._sink.append(
            Registration(
                kind=self.kind,
                name=name,
                cls=cls,
                plugin=self._plugin,
                package=self._package,
                version=self._version,
                aliases=tuple(aliases),
                description=description or describe_class(cls),
            )
        )


class LLMRegister(_Register[type[LLM]]):
    """``register(name, LLMClass, aliases=(), description=None)``, given to ``register_llms``."""

    kind: Kind = "llm"


class TaskRegister(_Register[type[Task]]):
    """``register(name, TaskClass, aliases=(), description=None)``, given to ``register_tasks``."""

    kind: Kind = "task"


class StepRegister(_Register[type[Step]]):
    """``register(name, StepClass, aliases=(), description=None)``, given to ``register_steps``."""

    kind: Kind = "step"


class SourceRegister(_Register[type[Source]]):
    """``register(name, SourceClass, aliases=(), description=None)``, given to ``register_sources``."""

    kind: Kind = "source"


class SinkRegister(_Register[type[Sink]]):
    """``register(name, SinkClass, aliases=(), description=None)``, given to ``register_sinks``."""

    kind: Kind = "sink"


class ExecutorRegister(_Register[type[PipelineExecutor]]):
    """``register(ExecutorClass, aliases=(), description=None)``, given to ``register_executors``."""

    kind: Kind = "executor"


class CommandRegister(_Register[type[Command]]):
    """``register(CommandClass, aliases=(), description=None)``, given to ``register_commands``."""

    kind: Kind = "command"


_REGISTERS: dict[Kind, type[_Register[Any]]] = {
    "llm": LLMRegister,
    "task": TaskRegister,
    "step": StepRegister,
    "source": SourceRegister,
    "sink": SinkRegister,
    "executor": ExecutorRegister,
    "command": CommandRegister,
}


class Registry:
    """The plugin manager plus the name tables it fills, loaded as lazily as lookups allow."""

    def __init__(self, discover: Callable[[], list[EntryPoint]] = plugins.discover) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self._discover = discover
        self._entry_points: list[EntryPoint] | None = None
        self._tables: dict[Kind, dict[str, Registration]] = {kind: {} for kind in _HOOKS}
        self._conflicts: dict[tuple[Kind, str], PluginConflictError] = {}
        self._records: dict[str, PluginRecord] = {}
        self._builtins_loaded = False
        self._scanned = False
        self._lock = threading.RLock()

    # -- loading -----------------------------------------------------------------------------

    def _ensure_builtins(self) -> None:
        if not self._builtins_loaded:
            self._builtins_loaded = True
            from taskloom import builtins

            self.add_plugin(builtins, BUILTINS, package="taskloom", version=__version__)

    def entry_points(self) -> list[EntryPoint]:
        if self._entry_points is None:
            self._entry_points = self._discover()
        return self._entry_points

    def _plugin_name(self, ep: EntryPoint) -> str:
        record = self._records.get(ep.name)
        if record is not None:
            package, _ = plugins.package_of(ep)  # read only for a name seen before: metadata is slow to parse
            if (record.package, record.target) != (package, ep.value):
                return f"{package}:{ep.name}"
        return ep.name

    def _load_entry_point(self, ep: EntryPoint) -> None:
        name = self._plugin_name(ep)
        if name in self._records:
            return
        package, version = plugins.package_of(ep)
        record = PluginRecord(name=name, package=package, version=version, target=ep.value)
        self._records[name] = record
        if not plugins.is_enabled(ep.name):
            record.status = "disabled"
            return
        try:
            plugins.check_core_requirement(ep)
            module = ep.load()
            self._add(module, record)
        except Exception as error:
            record.status = "failed"
            record.error = f"{type(error).__name__}: {error}"
            if plugins.strict():
                if isinstance(error, PluginConflictError):
                    raise
                raise PluginError(f"Plugin {record.label()} failed to load: {record.error}") from error
            logger.warning(
                "Plugin %s failed to load and is skipped (%s). Other plugins are unaffected; "
                "see `taskloom plugins`, or set TASKLOOM_DISABLE_PLUGINS=%s.",
                record.label(),
                record.error,
                ep.name,
            )

    def add_plugin(self, plugin: object, name: str, *, package: str | None = None, version: str = "") -> None:
        """Register a plugin object directly (built-ins, tests); errors propagate."""
        with self._lock:
            if name != BUILTINS:
                self._ensure_builtins()
            if name in self._records:
                raise PluginError(f"A plugin named {name!r} is already registered.")
            record = PluginRecord(name=name, package=package or name, version=version, target=repr(plugin))
            self._records[name] = record
            try:
                self._add(plugin, record)
            except Exception:
                del self._records[name]
                raise

    def _add(self, plugin: object, record: PluginRecord) -> None:
        self.pm.register(plugin, name=record.name)
        try:
            try:
                self.pm.check_pending()
            except pluggy.PluginValidationError as error:
                raise PluginError(
                    f"{record.label()} implements a hook that does not exist: {error}. "
                    f"Known hooks: {sorted(_HOOKS.values())}."
                ) from error
            collected: list[Registration] = []
            others = [p for p in self.pm.get_plugins() if p is not plugin]
            for kind, hook in _HOOKS.items():
                register = _REGISTERS[kind](collected, record.name, record.package, record.version)
                self.pm.subset_hook_caller(hook, others)(register=register)
            self._commit(collected, record)
        except BaseException:
            self.pm.unregister(plugin)
            raise
        record.status = "loaded"

    def _commit(self, registrations: list[Registration], record: PluginRecord) -> None:
        own: set[tuple[Kind, str]] = set()
        for reg in registrations:
            for name in (reg.name, *reg.aliases):
                if (reg.kind, name) in own:
                    raise PluginError(f"{record.label()} registers the {reg.kind} {name!r} twice.")
                own.add((reg.kind, name))
        conflicts: list[tuple[Kind, str, PluginConflictError]] = []
        for reg in registrations:
            for name in (reg.name, *reg.aliases):
                existing = self._tables[reg.kind].get(name)
                if existing is not None:
                    disable = [p for p in (existing.plugin, reg.plugin) if p != BUILTINS]
                    error = PluginConflictError(_LABEL[reg.kind], name, existing.origin(), reg.origin(), disable)
                    conflicts.append((reg.kind, name, error))
        if conflicts and plugins.strict():
            raise conflicts[0][2]
        for kind, name, error in conflicts:
            logger.warning("%s", error)
            self._conflicts[(kind, name)] = error
        for reg in registrations:
            for name in (reg.name, *reg.aliases):
                self._tables[reg.kind].setdefault(name, reg)
            record.registered.append(f"{reg.kind}:{reg.name}")

    def remove_plugin(self, name: str) -> None:
        """Undo ``add_plugin``: the plugin and every name it registered go away."""
        with self._lock:
            self._records.pop(name, None)
            if self.pm.get_plugin(name) is not None:
                self.pm.unregister(name=name)
            for kind, table in self._tables.items():
                for key in [k for k, reg in table.items() if reg.plugin == name]:
                    del table[key]
                    self._conflicts.pop((kind, key), None)

    def scan(self) -> None:
        """Load every plugin not loaded yet."""
        with self._lock:
            self._ensure_builtins()
            if not self._scanned:
                for ep in self.entry_points():
                    self._load_entry_point(ep)
                self._scanned = True

    # -- lookup ------------------------------------------------------------------------------

    def _found(self, kind: Kind, name: str) -> Registration | None:
        if (kind, name) in self._conflicts:
            raise self._conflicts[(kind, name)]
        return self._tables[kind].get(name)

    def resolve(self, kind: Kind, name: str) -> Registration:
        with self._lock:
            self._ensure_builtins()
            found = self._found(kind, name)
            if found is None and not self._scanned:
                for ep in self.entry_points():
                    if ep.name == name:
                        self._load_entry_point(ep)
                found = self._found(kind, name)
                if found is None:
                    self.scan()
                    found = self._found(kind, name)
            if found is None:
                unusable = [
                    f"{r.label()} is disabled by TASKLOOM_PLUGINS / TASKLOOM_DISABLE_PLUGINS"
                    if r.status == "disabled"
                    else f"{r.label()}: {r.error}"
                    for r in self._records.values()
                    if r.status in ("failed", "disabled")
                ]
                raise UnknownNameError(_LABEL[kind], name, self.names(kind), unusable)
            return found

    def names(self, kind: Kind) -> list[str]:
        """Canonical names (no aliases) of what is loaded so far."""
        return sorted({reg.name for reg in self._tables[kind].values()})

    def registrations(self, kind: Kind) -> list[Registration]:
        """Every installed name of this kind, after loading every plugin."""
        self.scan()
        seen = {reg.name: reg for reg in self._tables[kind].values()}
        return [seen[n] for n in sorted(seen)]

    def records(self) -> list[PluginRecord]:
        self.scan()
        return list(self._records.values())


_lock = threading.Lock()
_registry: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, created on first use."""
    global _registry
    with _lock:
        if _registry is None:
            _registry = Registry()
        return _registry


def set_registry(registry: Registry | None) -> Registry | None:
    """Swap the process-wide registry (tests); returns the previous one."""
    global _registry
    with _lock:
        previous, _registry = _registry, registry
        return previous


# -- the public functions ----------------------------------------------------------------------


def get_llm_class(name: str) -> type[LLM]:
    cls: type[LLM] = get_registry().resolve("llm", name).cls
    return cls


def get_task_class(name: str) -> type[Task]:
    cls: type[Task] = get_registry().resolve("task", name).cls
    return cls


def get_llm(name: str, /, **fields: Any) -> LLM:
    """Build the LLM registered as ``name``: ``get_llm("openai", model="gpt-4o-mini")``."""
    return get_llm_class(name)(**fields)


def get_task(name: str, /, **fields: Any) -> Task:
    """Build the task registered as ``name``: ``get_task("text-generation", llm=...)``.

    The task's own ``name`` (which suffixes its metadata keys) defaults to the name asked for
    when its class declares no ``registry_name`` of its own.
    """
    cls = get_task_class(name)
    if "name" not in fields and cls.own_registry_name() is None:
        fields["name"] = name
    task = cls(**fields)
    task.resolve_llm()  # no LLM given: the default one, chosen here rather than when the class is built
    return task


def list_llms() -> dict[str, type[LLM]]:
    """Every installed LLM name (aliases aside) and its class, sorted by name."""
    return {reg.name: reg.cls for reg in get_registry().registrations("llm")}


def list_tasks() -> dict[str, type[Task]]:
    """Every installed task name (aliases aside) and its class, sorted by name."""
    return {reg.name: reg.cls for reg in get_registry().registrations("task")}


def get_step_class(name: str) -> type[Step]:
    """The step registered as ``name``: a column step, or else a task (tasks are steps)."""
    registry = get_registry()
    try:
        step: type[Step] = registry.resolve("step", name).cls
        return step
    except UnknownNameError as step_error:
        try:
            task: type[Step] = registry.resolve("task", name).cls
            return task
        except UnknownNameError:
            known = sorted({*registry.names("step"), *registry.names("task")})
            raise UnknownNameError("step", name, known, step_error.broken) from None


def get_step(name: str, /, **fields: Any) -> Step:
    """Build the step or task registered as ``name``; like :func:`get_task` for tasks."""
    cls = get_step_class(name)
    if "name" not in fields and cls.own_registry_name() is None:
        fields["name"] = name
    step = cls(**fields)
    if isinstance(step, Task):
        step.resolve_llm()
    return step


def get_source(name: str, /, **fields: Any) -> Source:
    """Build the pipeline source registered as ``name``: ``get_source("jsonl", path="in.jsonl")``."""
    source: Source = get_registry().resolve("source", name).cls(**fields)
    return source


def get_sink(name: str, /, **fields: Any) -> Sink:
    """Build the pipeline sink registered as ``name``: ``get_sink("parquet")``."""
    sink: Sink = get_registry().resolve("sink", name).cls(**fields)
    return sink


def get_executor(name: str, /, **fields: Any) -> PipelineExecutor:
    """Build the executor registered as ``name``: ``get_executor("ray", address="auto")``."""
    executor: PipelineExecutor = get_registry().resolve("executor", name).cls(**fields)
    return executor


def list_executors() -> dict[str, type[PipelineExecutor]]:
    """Every installed executor name and its class, sorted by name."""
    return {reg.name: reg.cls for reg in get_registry().registrations("executor")}


def list_steps() -> dict[str, type[Step]]:
    """Every installed non-task step name and its class, sorted by name."""
    return {reg.name: reg.cls for reg in get_registry().registrations("step")}


def list_sources() -> dict[str, type[Source]]:
    """Every installed source name and its class, sorted by name."""
    return {reg.name: reg.cls for reg in get_registry().registrations("source")}


def list_sinks() -> dict[str, type[Sink]]:
    """Every installed sink name and its class, sorted by name."""
    return {reg.name: reg.cls for reg in get_registry().registrations("sink")}


def list_commands() -> dict[str, type[Command]]:
    """Every plugin's ``taskloom`` subcommand and its class, sorted by name."""
    return {reg.name: reg.cls for reg in get_registry().registrations("command")}


def list_plugins() -> list[PluginRecord]:
    """Every plugin found, loaded or not, with what it registered and any load error."""
    return get_registry().records()


def _class_for(kind: Kind, type_name: str) -> type:
    if ":" in type_name:
        import importlib

        obj: Any = defined_class(type_name)
        if obj is None:
            module_name, _, qualname = type_name.partition(":")
            obj = importlib.import_module(module_name)
            for part in qualname.split("."):
                obj = getattr(obj, part)
        if not (isinstance(obj, type) and issubclass(obj, _BASES[kind])):
            raise PluginError(f"{type_name} is not a taskloom {_BASES[kind].__name__}.")
        return obj
    return get_registry().resolve(kind, type_name).cls


def _as_mapping(data: Mapping[str, Any] | str | Path) -> dict[str, Any]:
    if isinstance(data, Mapping):
        return dict(data)
    import json

    text = Path(data).read_text() if isinstance(data, Path) else data
    if isinstance(data, Path) and data.suffix in {".yaml", ".yml"}:
        import yaml  # optional: pip install 'taskloom[yaml]'

        loaded = yaml.safe_load(text)
    else:
        loaded = json.loads(text)
    if not isinstance(loaded, dict):
        raise ValueError(f"expected a mapping, got {type(loaded).__name__}")
    return loaded


def load_llm(data: Mapping[str, Any] | str | Path) -> LLM:
    """Rebuild an LLM from ``llm.dump()`` (a dict, a JSON string, or a JSON/YAML file)."""
    fields = _as_mapping(data)
    cls = _class_for("llm", fields.pop("type"))
    llm: LLM = cls(**fields)
    return llm


def load_task(data: Mapping[str, Any] | str | Path) -> Task:
    """Rebuild a task (and its LLM) from ``task.dump()``."""
    fields = _as_mapping(data)
    cls = _class_for("task", fields.pop("type"))
    llm = fields.pop("llm", None)
    if isinstance(llm, Mapping):
        fields["llm"] = load_llm(llm)
    elif llm is not None:
        fields["llm"] = llm
    task: Task = cls(**fields)
    return task
