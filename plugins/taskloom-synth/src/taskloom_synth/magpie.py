"""``magpie``: instructions a model writes itself, from its own chat template, then answers.

An aligned model that is shown the text of its chat template up to where a user's message
begins writes a plausible user message: the Magpie method. Here that text is completed as raw
text (the LLM must complete raw text: the in-process llama.cpp model, or a server's
``/v1/completions``), then the instruction is answered as an ordinary chat, and so on for
``n_turns``. Each call is its own cached request, so a rerun pays for nothing it has, and a
killed run resumes mid-conversation.

Identical prompts would make identical cache keys, so every row's requests carry a seed of
their own: the row's ``seed`` column when it has one (a pipeline that starts from nothing numbers
its rows so), else a digest of the row. The same rows and settings therefore give the same
conversations on every run, whatever the number of rows in flight.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any, ClassVar

from pydantic import Field, PrivateAttr, model_validator

from taskloom.plugin import (
    Call,
    CallPlan,
    Chat,
    ChatType,
    GenerateOutput,
    Row,
    Source,
    StepColumns,
    Task,
)
from taskloom_synth.chat_markup import FAMILIES, ChatMarkup, TemplateError, from_template, from_tokenizer, named
from taskloom_synth.dialogues import Dialogues, read_dialogue, stripped
from taskloom_synth.seeds import row_key, seeded, stable_seed

SystemPrompts = str | list[str] | dict[str, tuple[str, float]]


class NumberedRows(Source):
    """``num_rows`` rows holding only their number (``seed``): what a pipeline that starts from nothing reads.

    Rows are made as they are read, and any range of them directly, so a run of a million rows
    holds none of them in memory and a Ray shard starts at its own first row.
    """

    num_rows: int = Field(ge=1, description="How many rows.")
    first: int = Field(default=0, description="The number of the first row.")
    made_by: str = Field(default="", description="The step that makes them, for messages.")

    def rows(self) -> Iterator[Row]:
        return self.rows_between(0, self.num_rows)

    def rows_between(self, start: int, stop: int) -> Iterator[Row]:
        for index in range(max(0, start), min(stop, self.num_rows)):
            yield {"seed": self.first + index}

    def count(self) -> int:
        return self.num_rows

    def describe(self) -> str:
        return f"{self.num_rows} rows made by {self.made_by or 'a step'} from nothing"


class Magpie(Task):
    """Conversations a model writes on its own: it completes its chat template up to a user
    turn to make the instruction, then answers it, for ``n_turns`` turns.

    Outputs ``instruction`` and ``response`` for one turn (``instruction`` alone with
    ``only_instruction``), ``conversation`` (chat messages, system prompt first when there is
    one) for several. With ``num_rows`` it needs no input: a pipeline that starts with it makes
    that many rows. A row's ``system_prompt`` column, else the task's ``system_prompt`` (one,
    a list to draw from, or named prompts with weights), steers what kind of user it writes.
    """

    registry_name: ClassVar[str | None] = "magpie"
    needs_raw_text: ClassVar[bool] = True
    example: ClassVar[tuple[Row, Row] | None] = (
        {"system_prompt": "You are a patient maths tutor."},
        {
            "instruction": "Can you explain why dividing by a fraction is the same as multiplying by its reciprocal?",
            "response": "Dividing by a number asks how many times it fits...",
        },
    )

    n_turns: int = Field(default=1, ge=1, le=32, description="User turns per conversation (each one answered).")
    template: str = Field(
        default="auto",
        description="The chat template's markup: 'auto' reads the model's own (a GGUF's, or llama.cpp's server's); "
        "'hf:owner/name' or a tokenizer_config.json / .jinja path reads a tokenizer's; or a family for a model "
        f"whose template cannot be read (an API): {', '.join(FAMILIES)}.",
    )
    system_prompt: SystemPrompts | None = Field(
        default=None,
        description="A system prompt for every conversation; a list (one drawn per row); or names mapped to "
        "[prompt, weight] (drawn by weight, the name kept in system_prompt_key). A row's system_prompt column wins.",
    )
    only_instruction: bool = Field(default=False, description="Write the instruction only, no answer (one turn).")
    end_with_user: bool = Field(
        default=False, description="End the conversation with the last user message, unanswered."
    )
    include_system_prompt: bool = Field(
        default=True, description="Keep the system prompt as the first message of conversation."
    )
    num_rows: int | None = Field(
        default=None,
        ge=1,
        description="Make this many rows from nothing: a pipeline that starts with this step needs no source.",
    )
    seed: int = Field(default=0, description="Seeds the draw of system prompts and each row's sampling.")

    _markup: ChatMarkup | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _consistent(self) -> Magpie:
        if self.template != "auto" and self.template not in FAMILIES and not _names_a_tokenizer(self.template):
            raise ValueError(
                f"template {self.template!r} is not known; use auto, a family ({', '.join(FAMILIES)}), "
                "hf:owner/name, or the path of a tokenizer_config.json or .jinja chat template."
            )
        if self.only_instruction and self.n_turns > 1:
            raise ValueError("only_instruction writes one instruction: it needs n_turns 1.")
        if isinstance(self.system_prompt, dict):
            for key, entry in self.system_prompt.items():
                if not (isinstance(entry, tuple | list) and len(entry) == 2 and float(entry[1]) >= 0):
                    raise ValueError(f"system_prompt {key!r} must be [prompt, weight] with a weight >= 0.")
            if sum(float(weight) for _, weight in self.system_prompt.values()) <= 0:
                raise ValueError("system_prompt: the weights add up to 0; give at least one a positive weight.")
        elif isinstance(self.system_prompt, list) and not self.system_prompt:
            raise ValueError("system_prompt is an empty list; give at least one prompt, or none.")
        return self

    @property
    def inputs(self) -> StepColumns:
        return {"system_prompt": False, "seed": False}

    @property
    def outputs(self) -> StepColumns:
        if self.only_instruction:
            columns = ["instruction"]
        elif self.n_turns == 1 and not self.end_with_user:
            columns = ["instruction", "response"]
        else:
            columns = ["conversation"]
        if isinstance(self.system_prompt, dict):
            columns.append("system_prompt_key")
        return [*columns, "model_name"]

    def own_source(self) -> Source | None:
        if self.num_rows is None:
            return None
        return NumberedRows(num_rows=self.num_rows, made_by=f"task {self.name!r} (magpie)")

    # -- prompts --------------------------------------------------------------------------------

    def markup(self) -> ChatMarkup:
        """The markup of the chat template, read from the model once (``auto``) or named."""
        if self._markup is None:
            if self.template in FAMILIES:
                self._markup = named(self.template)
            elif self.template != "auto":
                self._markup = from_tokenizer(self.template)
            else:
                llm = self.resolve_llm()
                probe = llm.render_chat([{"role": "user", "content": "x"}])
                if probe is None:
                    raise TemplateError(
                        f"task {self.name!r} (magpie) cannot read the chat template of {llm.type_name()} "
                        f"({llm.model_name}) from here; set template to its family: {', '.join(FAMILIES)}."
                    )
                self._markup = from_template(_rendered_by(llm), llm.model_name)
        return self._markup

    def system_for(self, row: Row) -> tuple[str | None, str | None]:
        """The row's system prompt and, for named prompts, its name."""
        given = row.get("system_prompt")
        if isinstance(given, str) and given.strip():
            return given, None
        prompts = self.system_prompt
        if prompts is None or isinstance(prompts, str):
            return prompts, None
        draw = random.Random(stable_seed(self.seed, "system", row_key(row)))
        if isinstance(prompts, list):
            return draw.choice(prompts), None
        names = list(prompts)
        [name] = draw.choices(names, weights=[float(prompts[n][1]) for n in names])
        return str(prompts[name][0]), name

    def format_input(self, input: Row) -> ChatType:
        system, _ = self.system_for(input)
        return self.markup().pre_query(system, [])

    def _seeded(self, input: Row, generation: int, turn: int, role: str) -> dict[str, Any]:
        return seeded(self.resolve_llm(), self.seed, input, generation, turn, role)

    def plan(self, input: Row, chat: ChatType) -> CallPlan:
        markup = self.markup()
        system, key = self.system_for(input)
        made = Dialogues(self.num_generations)
        stops = list(markup.stops)
        for turn in range(self.n_turns):
            # The user's turn: the template's own text up to a user message, completed as raw text.
            outputs: list[GenerateOutput] = yield [
                Call(
                    chat if turn == 0 else markup.pre_query(system, made.messages[g]),
                    1,
                    first_index=g,
                    kwargs={"stop": stops, **self._seeded(input, g, turn, "user")},
                )
                for g in made.live
            ]
            if not made.took(outputs, "user", stripped):
                break
            if self.only_instruction or (turn == self.n_turns - 1 and self.end_with_user):
                break
            # The assistant's turn: an ordinary chat, in the model's own template.
            prefix: Chat = [{"role": "system", "content": system}] if system else []
            outputs = yield [
                Call([*prefix, *made.messages[g]], 1, first_index=g, kwargs=self._seeded(input, g, turn, "assistant"))
                for g in made.live
            ]
            if not made.took(outputs, "assistant", stripped):
                break
        return made.output({"system_prompt": system, "system_prompt_key": key})

    def format_output(self, output: str | None, input: Row | None = None) -> dict[str, Any]:
        made = read_dialogue(output)
        conversation: Chat = made["messages"]
        columns: dict[str, Any] = {}
        if isinstance(self.system_prompt, dict):
            columns["system_prompt_key"] = made.get("system_prompt_key")
        outputs = [c for c in self.output_columns() if c != "system_prompt_key"]
        if outputs == ["conversation"]:
            expected = self.n_turns * 2 - (1 if self.end_with_user else 0)
            if len(conversation) < expected:
                raise ValueError(f"the conversation stopped after {len(conversation)} of {expected} messages")
            system = made.get("system_prompt")
            head: Chat = [{"role": "system", "content": system}] if system and self.include_system_prompt else []
            columns["conversation"] = [*head, *conversation]
            return columns
        columns["instruction"] = conversation[0]["content"]
        if "response" in outputs:
            if len(conversation) < 2:
                raise ValueError("the instruction was not answered")
            columns["response"] = conversation[1]["content"]
        return columns


def _names_a_tokenizer(template: str) -> bool:
    return template.startswith("hf:") or template.endswith((".json", ".jinja", ".j2"))


def _rendered_by(llm: Any) -> Any:
    def render(messages: Chat) -> str:
        text = llm.render_chat(messages)
        if text is None:
            raise TemplateError(f"{llm.model_name} stopped rendering its chat template")
        return str(text)

    return render
