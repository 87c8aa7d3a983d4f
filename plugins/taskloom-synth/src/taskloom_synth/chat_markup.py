"""A chat template's markup, as the few strings Magpie needs to write a conversation by hand.

Magpie sends a model the text its own chat template would make of a conversation, stopped just
where the next user turn begins, and lets the model write that turn. So it needs the markup
around each turn, not the template itself. :class:`ChatMarkup` holds it, and comes from one of
two places: a named family (the strings are those families' documented formats), or the
model's own template, rendered once with sentinel texts in place of the contents and cut
apart at them. The second way needs no knowledge of the family at all, so any GGUF file or
tokenizer template works, including ones written after this module.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from taskloom.plugin import Chat, TaskloomError, text_of

FAMILIES = ("chatml", "llama-3", "qwen2", "gemma")
"""The template families Magpie knows by name, for a model whose template it cannot read (an API)."""


class TemplateError(TaskloomError, ValueError):
    """A chat template that cannot be cut into the markup Magpie needs, or an unknown family."""


@dataclass(frozen=True)
class ChatMarkup:
    """The text around each turn of a conversation, as a chat template writes it.

    ``start`` is everything before the first user message when no system prompt is given (a
    BOS token, a default system prompt the template adds, the user's header). A template with a
    system role writes ``system_before`` + the system prompt + ``system_after`` instead; one
    without (``system_before`` None) has the system prompt open the first user message, as
    Gemma's template does. ``after_user`` closes a user message and opens the assistant's
    answer; ``after_assistant`` closes an answer and opens the next user message. ``stops`` end
    a user message the model is writing.
    """

    name: str
    start: str
    system_before: str | None
    system_after: str
    after_user: str
    after_assistant: str
    stops: tuple[str, ...]

    def pre_query(self, system_prompt: str | None, history: Chat) -> str:
        """The text of ``history`` (alternating user and assistant messages) up to where the next
        user message begins, for the model to complete with one."""
        parts = [self._head(system_prompt)]
        for message in history:
            parts.append(text_of(message["content"]))
            parts.append(self.after_user if message["role"] == "user" else self.after_assistant)
        return "".join(parts)

    def _head(self, system_prompt: str | None) -> str:
        if not system_prompt:
            return self.start
        if self.system_before is None:
            return f"{self.start}{system_prompt}\n\n"
        return f"{self.system_before}{system_prompt}{self.system_after}"


def named(family: str) -> ChatMarkup:
    """The markup of a family by name (see :data:`FAMILIES`)."""
    if family in ("chatml", "qwen2"):
        # Qwen2's template is ChatML that adds a default system prompt when none is given.
        start = "<|im_start|>user\n"
        if family == "qwen2":
            start = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n" + start
        return ChatMarkup(
            name=family,
            start=start,
            system_before="<|im_start|>system\n",
            system_after="<|im_end|>\n<|im_start|>user\n",
            after_user="<|im_end|>\n<|im_start|>assistant\n",
            after_assistant="<|im_end|>\n<|im_start|>user\n",
            stops=("<|im_end|>", "<|im_start|>"),
        )
    if family == "llama-3":
        header = "<|start_header_id|>{}<|end_header_id|>\n\n"
        return ChatMarkup(
            name=family,
            start="<|begin_of_text|>" + header.format("user"),
            system_before="<|begin_of_text|>" + header.format("system"),
            system_after="<|eot_id|>" + header.format("user"),
            after_user="<|eot_id|>" + header.format("assistant"),
            after_assistant="<|eot_id|>" + header.format("user"),
            stops=("<|eot_id|>", "<|start_header_id|>", "<|end_of_text|>"),
        )
    if family == "gemma":
        return ChatMarkup(
            name=family,
            start="<bos><start_of_turn>user\n",
            system_before=None,
            system_after="",
            after_user="<end_of_turn>\n<start_of_turn>model\n",
            after_assistant="<end_of_turn>\n<start_of_turn>user\n",
            stops=("<end_of_turn>", "<start_of_turn>"),
        )
    raise TemplateError(f"unknown chat template family {family!r}; known: auto, {', '.join(FAMILIES)}.")


def from_tokenizer(spec: str) -> ChatMarkup:
    """The markup of the chat template a tokenizer carries: ``hf:owner/name`` (its
    ``tokenizer_config.json`` on the Hugging Face Hub, ``@revision`` optional), or the path of a
    ``tokenizer_config.json`` or of a Jinja chat template file.

    For a model served where its template cannot be asked for (vLLM, an API), so Magpie writes
    exactly the markup the model was trained on, not a family's approximation.
    """
    if spec.startswith("hf:"):
        repo, _, revision = spec[3:].partition("@")
        path = _download_config(repo, revision or None)
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise TemplateError(
                f"template {spec!r}: no such file; give a tokenizer_config.json, a Jinja chat template file, "
                f"hf:owner/name, auto, or a family ({', '.join(FAMILIES)})."
            )
    text = path.read_text(encoding="utf-8")
    if path.suffix != ".json":
        return from_template(jinja_renderer(text), spec)
    try:
        config = json.loads(text)
    except ValueError as error:
        raise TemplateError(f"template {spec!r}: {path} is not JSON ({error})") from None
    template = config.get("chat_template") if isinstance(config, dict) else None
    if isinstance(template, list):  # named templates: the default one
        named_ones = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named_ones.get("default") or next(iter(named_ones.values()), None)
    if not isinstance(template, str):
        raise TemplateError(f"template {spec!r}: {path} has no chat_template; name the family instead.")
    return from_template(
        jinja_renderer(template, _token(config.get("bos_token")), _token(config.get("eos_token"))), spec
    )


def jinja_renderer(template: str, bos_token: str = "", eos_token: str = "") -> Callable[[Chat], str]:
    """A chat template rendered as tokenizers render theirs: sandboxed Jinja, blocks trimmed, the
    generation prompt added, and the helpers templates call (``raise_exception``, ``tojson``)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    environment.globals["raise_exception"] = raise_exception
    environment.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    environment.filters["tojson"] = lambda value, indent=None: json.dumps(value, ensure_ascii=False, indent=indent)
    compiled = environment.from_string(template)

    def render(messages: Chat) -> str:
        return compiled.render(messages=messages, add_generation_prompt=True, bos_token=bos_token, eos_token=eos_token)

    return render


def _token(value: Any) -> str:
    """A special token as tokenizer configs write it: a string, or ``{"content": ...}``."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else ""


def _download_config(repo: str, revision: str | None) -> Path:
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise TemplateError(
            f"template 'hf:{repo}' reads the tokenizer from the Hugging Face Hub, which needs huggingface_hub: "
            "pip install taskloom-huggingface (or huggingface_hub)."
        ) from None
    try:
        # HF_ENDPOINT read now, not when huggingface_hub was imported: a mirror set by the run counts.
        endpoint = os.environ.get("HF_ENDPOINT") or None
        return Path(hf_hub_download(repo, "tokenizer_config.json", revision=revision, endpoint=endpoint))
    except Exception as error:  # not found, gated, offline: the client's own message says which
        raise TemplateError(f"template 'hf:{repo}': the tokenizer config could not be read: {error}") from None


_MARK = "TASKLOOMSENTINEL{}X"
"""Sentinel contents: plain letters and digits, which no template trims, escapes or splits."""


def from_template(render: Callable[[Chat], str], name: str) -> ChatMarkup:
    """The markup of the template behind ``render`` (a model's ``render_chat``), cut apart at
    sentinel contents: once with a system prompt, once without.

    A template that refuses a system role (Gemma's raises) is read as one without.
    """
    marks = [_MARK.format(i) for i in range(4)]
    plain = render(
        [
            {"role": "user", "content": marks[1]},
            {"role": "assistant", "content": marks[2]},
            {"role": "user", "content": marks[3]},
        ]
    )
    try:
        start, after_user, after_assistant, _ = _cut(plain, marks[1:])
    except ValueError:
        raise TemplateError(
            f"the chat template of {name} does not keep the messages' text as it is (a user, an assistant and "
            "a user message could not be found in what it wrote); name its family instead: "
            f"template: {' | '.join(FAMILIES)}."
        ) from None
    system_before: str | None
    system_after = ""
    try:
        with_system = render([{"role": "system", "content": marks[0]}, {"role": "user", "content": marks[1]}])
        system_before, system_after, _ = _cut(with_system, marks[:2])
    except ValueError:
        system_before = None  # a system message was refused or dropped: it opens the user's turn instead
    except Exception:  # a template that raises on a system role (Gemma's) has none
        system_before = None
    shared = common_prefix(after_user, after_assistant)
    stop = shared.split("\n")[0].strip() or shared.strip()
    return ChatMarkup(
        name=name,
        start=start,
        system_before=system_before,
        system_after=system_after,
        after_user=after_user,
        after_assistant=after_assistant,
        stops=(stop,) if stop else (),
    )


def _cut(text: str, marks: list[str]) -> list[str]:
    """``text`` cut at each mark in order: the pieces before, between and after them."""
    pieces = []
    rest = text
    for mark in marks:
        before, found, rest = rest.partition(mark)
        if not found:
            raise ValueError(mark)
        pieces.append(before)
    pieces.append(rest)
    return pieces


def common_prefix(first: str, second: str) -> str:
    """The text two markups share at their start: the end-of-turn markup that closes any message."""
    size = 0
    for a, b in zip(first, second, strict=False):
        if a != b:
            break
        size += 1
    return first[:size]
