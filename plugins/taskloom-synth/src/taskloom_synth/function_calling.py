"""``function-calling``: user requests and the tool calls that answer them, from tool specifications.

After distilabel's APIGen (generator, execution checker, semantic checker), as one task whose plan
makes up to three calls per generation:

1. write a realistic user request for the row's tools (skipped when the row brings its own
   ``instruction``), in plain text;
2. answer that request with tool calls: natively where the LLM takes a ``tools`` option (the
   request goes out as a user message, the way a deployed model would see it), else with the
   specs in the prompt and, where the LLM takes a JSON schema, structured output whose tool
   names are an enum, so a small local model's grammar cannot name a tool that does not exist;
3. optionally, a judge: do these calls do what the request asks?

Two calls rather than one structured call for (1) and (2) because the small local model writes a
plausible request in prose far more reliably than it fills a nested schema holding a request and
its calls at once, and because step (2) is then exactly the exchange the dataset is meant to
teach. Every call goes through the cache, so a rerun pays nothing.

Calls are checked against their tool's JSON Schema; an invalid call is kept and marked, never
dropped. With ``functions`` set, valid calls also run in a child process
(:mod:`taskloom_synth.tool_runner`) while the judge is asked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, ClassVar, Literal

from pydantic import Field, PrivateAttr, field_validator

from taskloom import Task
from taskloom.plugin import (
    Call,
    CallPlan,
    ChatMessage,
    ChatType,
    GenerateOutput,
    Row,
    RowInputError,
    StepColumns,
    decoded_arguments,
    token_counts,
)

__all__ = ["FunctionCalling", "ToolSpecError", "check_tools", "parse_tool_calls"]

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""Tool names OpenAI's and Anthropic's APIs both accept."""
_PREFIX = re.compile(
    r"^\s*(?:\*\*)?(?:(?:the\s+)?user(?:'s)?\s*(?:message|request)?(?:\s+is)?|request|message|query)"
    r"\s*:\s*(?:\*\*)?\s*",
    re.I,
)


class ToolSpecError(ValueError):
    """A tool specification that is not an OpenAI tool spec with a valid JSON Schema; the message names the tool."""


# -- tool specs --------------------------------------------------------------------------------


def check_tools(value: Any) -> list[dict[str, Any]]:
    """``value`` (a list of OpenAI tool specs, one spec, or either as JSON text) as a checked list of specs.

    Each spec must read ``{"type": "function", "function": {"name", "description"?, "parameters"?}}``
    with ``parameters`` a valid JSON Schema of an object, checked against its meta-schema: a
    schema with a typo would otherwise validate nothing and pass every call.
    """
    from jsonschema.exceptions import SchemaError
    from jsonschema.validators import validator_for

    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as error:
            raise ToolSpecError(f"the tools are not valid JSON: {error}") from None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ToolSpecError(f"the tools must be a non-empty list of tool specs, got {type(value).__name__}")
    checked: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, spec in enumerate(value):
        function = spec.get("function") if isinstance(spec, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        label = f"tool {index}" + (f" ({name!r})" if isinstance(name, str) else "")
        if not isinstance(spec, dict) or spec.get("type") != "function" or not isinstance(function, dict):
            raise ToolSpecError(
                f"{label} is not an OpenAI tool spec: expected "
                "{'type': 'function', 'function': {'name': ..., 'description': ..., 'parameters': {...}}}, "
                f"got {json.dumps(spec, default=str)[:200]}"
            )
        if not isinstance(name, str) or not _NAME.match(name):
            raise ToolSpecError(f"{label}: the name must be 1-64 letters, digits, '_' or '-', got {name!r}")
        if name in seen:
            raise ToolSpecError(f"{label}: two tools are named {name!r}")
        seen.add(name)
        description = function.get("description")
        if description is not None and not isinstance(description, str):
            raise ToolSpecError(f"{label}: the description must be a string, got {type(description).__name__}")
        parameters = function.get("parameters")
        if parameters is None:
            parameters = {"type": "object", "properties": {}}
        if not isinstance(parameters, dict):
            raise ToolSpecError(f"{label}: parameters must be a JSON Schema object, got {type(parameters).__name__}")
        try:
            validator_for(parameters).check_schema(parameters)
        except SchemaError as error:
            where = "/".join(str(p) for p in error.path) or "the root"
            raise ToolSpecError(
                f"{label}: parameters is not a valid JSON Schema: {error.message} (at {where})"
            ) from None
        if parameters.get("type", "object") != "object":
            raise ToolSpecError(
                f"{label}: parameters must describe an object (type 'object'), got {parameters['type']!r}"
            )
        checked.append({"type": "function", "function": {**function, "parameters": parameters}})
    return checked


def _tool_list(tools: list[dict[str, Any]]) -> str:
    lines = []
    for spec in tools:
        function = spec["function"]
        lines.append(f"- {function['name']}: {function.get('description') or '(no description)'}")
        lines.append(f"  arguments (JSON Schema): {json.dumps(function['parameters'], ensure_ascii=False)}")
    return "\n".join(lines)


# -- reading replies ---------------------------------------------------------------------------


def _json_values(text: str) -> list[Any]:
    """Every JSON object or array in ``text``, outermost first (code fences and prose around them ignored)."""
    decoder = json.JSONDecoder()
    found: list[Any] = []
    index = 0
    while index < len(text):
        start = min((i for i in (text.find("{", index), text.find("[", index)) if i >= 0), default=-1)
        if start < 0:
            break
        try:
            value, end = decoder.raw_decode(text, start)
        except ValueError:
            index = start + 1
            continue
        found.append(value)
        index = end
    return found


def _one_call(item: Any) -> dict[str, Any] | None:
    """``{"name", "arguments"}`` (or ``{"function": {...}}``, or ``parameters`` for ``arguments``) as one call."""
    if not isinstance(item, dict):
        return None
    if isinstance(item.get("function"), dict):
        return _one_call({**item["function"], "id": item.get("id")})
    name = item.get("name")
    if not isinstance(name, str):
        return None
    call: dict[str, Any] = {
        "name": name,
        "arguments": decoded_arguments(item.get("arguments", item.get("parameters", {}))),
    }
    if isinstance(item.get("id"), str):
        call["id"] = item["id"]
    return call


def parse_tool_calls(text: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """The calls in a reply, and the prose the model wrote instead of (or beside) them.

    Reads the providers' native encoding (``{"tool_calls": [{"id", "name", "arguments"}],
    "content"?}``), the structured answer (the same shape), and, leniently, what a model told
    only by its prompt writes: a list of calls, one call, an OpenAI-style ``function`` wrapper.
    """
    if not text:
        return [], None
    for value in _json_values(text):
        items: Any = None
        content: str | None = None
        if isinstance(value, dict) and isinstance(value.get("tool_calls"), list):
            items = value["tool_calls"]
            content = value.get("content") if isinstance(value.get("content"), str) else None
        elif isinstance(value, list):
            items = value
        elif isinstance(value, dict):
            items = [value]
        calls = [c for c in (_one_call(item) for item in items or []) if c is not None]
        if calls:
            return calls, content
    return [], text.strip() or None


def _cut_off(text: str | None) -> bool:
    """Whether a reply that is meant to be JSON as a whole is not: cut off at the token limit, or broken.

    Then the calls read from inside it may be only some of those the model meant to make.
    """
    body = re.sub(r"^```[A-Za-z]*\s*|\s*```\s*$", "", (text or "").strip())
    if not body.startswith(("{", "[")):
        return False
    try:
        json.loads(body)
    except ValueError:
        return True
    return False


def _verdict(text: str | None) -> tuple[bool | None, str | None]:
    """The judge's yes/no and reason, from its JSON or, failing that, from its first yes or no."""
    if not text:
        return None, None
    for value in _json_values(text):
        if isinstance(value, dict) and "verdict" in value:
            verdict = value["verdict"]
            reason = value.get("reason")
            reason = str(reason) if reason is not None else None
            if isinstance(verdict, bool):
                return verdict, reason
            word = str(verdict).strip().lower()
            if word in ("yes", "true", "pass"):
                return True, reason
            if word in ("no", "false", "fail"):
                return False, reason
    match = re.search(r"\b(yes|no)\b", text, re.I)
    if match is None:
        return None, text.strip()
    return match.group(1).lower() == "yes", text.strip()


def _clean_request(text: str | None) -> str | None:
    """The user's message from a reply that should be only that: quotes, labels and afterthoughts removed."""
    if not text:
        return None
    body = text.strip()
    body = _PREFIX.sub("", body).strip()
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", body) if p.strip()]
    if not paragraphs:
        return None
    first = _PREFIX.sub("", paragraphs[0]).strip()
    if len(first) >= 2 and first[0] == first[-1] and first[0] in "\"'“”":
        first = first[1:-1].strip()
    first = first.strip("“”").strip()
    return first or None


# -- the task ----------------------------------------------------------------------------------

_REQUEST_PROMPT = """We are collecting examples of people asking an assistant for help that the assistant gives by \
calling software functions.

These are the functions the assistant can call:
{tools}
{topic}
Write one message that a real user could send, which the assistant can handle completely by calling one or more \
of these functions. Give every concrete value the functions need (names, numbers, dates, places) in the \
message itself, naturally, the way a person would.

Reply with the user's message and nothing else: no quotes, no labels, no explanation."""

_CALLS_PROMPT = """You help the user by calling functions. These are the only functions you have:
{tools}

Answer with JSON only, in this form:
{{"tool_calls": [{{"name": "<function name>", "arguments": {{ ...the function's arguments... }}}}]}}
Use one call per action the user asks for, give every required argument, and take the values from \
the user's message."""

_JUDGE_PROMPT = """Check whether an assistant's function calls do what a user asked.

The user wrote:
{query}

The functions available were:
{tools}

The assistant called:
{calls}

Do these calls, with these argument values, carry out the request: the right functions, values taken \
from the request, nothing needed left out and nothing made up? Answer in JSON: \
{{"reason": "<one or two sentences>", "verdict": "yes" or "no"}}"""

_JUDGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "reason": {"type": "string", "maxLength": 400},
        "verdict": {"type": "string", "enum": ["yes", "no"]},
    },
    "required": ["reason", "verdict"],
}


class FunctionCalling(Task):
    """From tool specs, a user request, the tool calls that answer it, their check, run and judgement.

    Input: ``tools`` (a list of OpenAI tool specs, or their JSON text; or ``tools`` set once on the
    task), optionally ``topic`` (what the request should be about) or ``instruction`` (a request
    to answer as it is). Output: ``query``, ``answers`` (APIGen's JSON list of
    ``{"name", "arguments"}``), ``valid`` and ``errors`` (each call checked against its schema),
    ``execution`` (with ``functions``), ``semantic_check`` / ``semantic_reason`` (the judge), and
    ``messages`` + ``tools`` in the tool-calling format TRL's SFT trainer reads.
    """

    registry_name: ClassVar[str | None] = "function-calling"
    example: ClassVar[tuple[Row, Row] | None] = (
        {
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "description": "The weather now in a city.",
                        "parameters": {
                            "type": "object",
                            "properties": {"city": {"type": "string"}},
                            "required": ["city"],
                        },
                    },
                }
            ]
        },
        {
            "query": "Is it raining in Lisbon right now?",
            "answers": '[{"name": "get_weather", "arguments": {"city": "Lisbon"}}]',
            "valid": True,
            "errors": [],
            "semantic_check": True,
            "semantic_reason": "It asks for the weather in the city the request names.",
            "messages": [
                {"role": "user", "content": "Is it raining in Lisbon right now?"},
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {
                            "id": "call_0",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Lisbon"}'},
                        }
                    ],
                },
            ],
        },
    )

    tools: list[dict[str, Any]] | None = Field(
        default=None,
        description="Tool specs (OpenAI format) for every row; a row's own 'tools' column wins over them.",
    )
    functions: str | None = Field(
        default=None,
        description="Run the valid calls against the Python functions in this module ('pkg.module') or file "
        "('tools.py'), one function per tool name, in a child process without network. Not a sandbox.",
    )
    execution_timeout: float = Field(default=5.0, gt=0, description="Seconds each executed call may take.")
    semantic_check: bool = Field(
        default=True, description="Ask the LLM whether the calls answer the request (one more call per generation)."
    )
    system_prompt: str | None = Field(
        default=None,
        description="A system message for the call that makes the tool calls; by default, for an LLM without "
        "native tool calls, one listing the tools and the answer's JSON form.",
    )
    structured_output: bool = Field(
        default=True,
        description="Hold prompted tool calls to a JSON schema (tool names as an enum) when the LLM supports it.",
    )
    max_calls: int = Field(default=4, ge=1, description="Most calls in one structured answer.")
    grammar_arguments: bool = Field(
        default=True,
        description="In the structured answer's schema, hold each call's arguments to its tool's parameter "
        "schema too (a local model's grammar then writes valid arguments); False: names only, for "
        "parameter schemas a grammar converter cannot take.",
    )
    arguments_format: Literal["json", "object"] = Field(
        default="json",
        description="The 'arguments' of the tool calls in 'messages': 'json', a JSON string as OpenAI's API "
        "writes it; 'object', the decoded object, as TRL's dataset docs show it.",
    )
    tools_format: Literal["list", "json"] = Field(
        default="list",
        description="The output 'tools' column: 'list' of specs (as TRL reads it), or 'json' text, which keeps "
        "a Parquet column of differently shaped schemas to one type.",
    )

    _validators: dict[str, Any] = PrivateAttr(default_factory=dict)

    @field_validator("tools", mode="before")
    @classmethod
    def _valid_tools(cls, value: Any) -> Any:
        return None if value is None else check_tools(value)

    @property
    def inputs(self) -> StepColumns:
        return {"tools": self.tools is None, "topic": False, "instruction": False}

    @property
    def outputs(self) -> StepColumns:
        return [
            "query",
            "answers",
            "valid",
            "errors",
            "execution",
            "semantic_check",
            "semantic_reason",
            "messages",
            "tools",
            "model_name",
        ]

    # -- how this LLM is asked ---------------------------------------------------------------------

    def _mode(self) -> Literal["native", "structured", "prompted"]:
        """How the tool calls are asked for: decided by what the LLM's options accept."""
        llm = self.resolve_llm()
        if llm.calls_tools():
            return "native"
        if self.structured_output and llm.accepts("structured_output"):
            return "structured"
        return "prompted"

    def _row_tools(self, row: Row) -> list[dict[str, Any]]:
        value = row.get("tools")
        if value is None:
            if self.tools is None:
                raise RowInputError(f"task {self.name!r}: the row has no tools and the task sets none")
            return self.tools
        try:
            return check_tools(value)
        except ToolSpecError as error:
            raise RowInputError(f"task {self.name!r}: {error}") from None

    def _request_chat(self, row: Row, tools: list[dict[str, Any]]) -> ChatType:
        topic = row.get("topic")
        line = f"\nThe request should be about: {topic}.\n" if topic else ""
        return [{"role": "user", "content": _REQUEST_PROMPT.format(tools=_tool_list(tools), topic=line)}]

    def _calls_chat(self, query: str, tools: list[dict[str, Any]]) -> ChatType:
        system = self.system_prompt
        if system is None and self._mode() != "native":
            system = _CALLS_PROMPT.format(tools=_tool_list(tools))
        user: ChatMessage = {"role": "user", "content": query}
        return [{"role": "system", "content": system}, user] if system else [user]

    def _calls_kwargs(self, tools: list[dict[str, Any]]) -> dict[str, Any]:
        if self._mode() == "native":
            return {"tools": tools, "tool_choice": "required"}
        if self._mode() == "structured":
            return {"structured_output": self._calls_schema(tools)}
        return {}

    def _calls_schema(self, tools: list[dict[str, Any]]) -> dict[str, Any]:
        """The answer's schema: a list of calls whose ``name`` is one of the tools'.

        With ``grammar_arguments``, each call is one branch per tool (its name, and its own
        parameter schema for the arguments), so a grammar keeps the arguments valid as well;
        otherwise the arguments are any object, and the check after the call marks bad ones.
        """
        names = [spec["function"]["name"] for spec in tools]
        call: dict[str, Any] = {
            "type": "object",
            "properties": {"name": {"type": "string", "enum": names}, "arguments": {"type": "object"}},
            "required": ["name", "arguments"],
        }
        if self.grammar_arguments:
            branches = [
                {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string", "enum": [spec["function"]["name"]]},
                        "arguments": spec["function"]["parameters"],
                    },
                    "required": ["name", "arguments"],
                }
                for spec in tools
            ]
            call = branches[0] if len(branches) == 1 else {"anyOf": branches}
        return {
            "type": "object",
            "properties": {"tool_calls": {"type": "array", "items": call, "minItems": 1, "maxItems": self.max_calls}},
            "required": ["tool_calls"],
        }

    def _judge_call(self, query: str, tools: list[dict[str, Any]], calls: list[dict[str, Any]], index: int) -> Call:
        shown = json.dumps([{"name": c["name"], "arguments": c["arguments"]} for c in calls], ensure_ascii=False)
        chat: ChatType = [
            {"role": "user", "content": _JUDGE_PROMPT.format(query=query, tools=_tool_list(tools), calls=shown)}
        ]
        kwargs = {"structured_output": _JUDGE_SCHEMA} if self.resolve_llm().accepts("structured_output") else None
        return Call(chat, 1, first_index=index, kwargs=kwargs)

    # -- the task's recipe ------------------------------------------------------------------------

    def format_input(self, input: Row) -> ChatType:
        tools = self._row_tools(input)
        instruction = input.get("instruction")
        if instruction:
            return self._calls_chat(str(instruction), tools)
        return self._request_chat(input, tools)

    def plan(self, input: Row, chat: ChatType) -> CallPlan:
        tools = self._row_tools(input)
        n = self.num_generations
        records: list[dict[str, Any]] = [{} for _ in range(n)]
        tokens_in, tokens_out = [0] * n, [0] * n
        errors: list[str | None] = [None] * n

        def account(output: GenerateOutput, generations: list[int]) -> None:
            counts_in, counts_out = token_counts(output.get("statistics"), len(generations))
            per = output.get("errors") or []
            for position, g in enumerate(generations):
                tokens_in[g] += counts_in[position] or 0
                tokens_out[g] += counts_out[position] or 0
                failure = per[position] if position < len(per) and per[position] else output.get("error")
                if failure and errors[g] is None:
                    errors[g] = str(failure)

        instruction = input.get("instruction")
        if instruction:
            [answered] = yield [Call(chat, n, kwargs=self._calls_kwargs(tools))]
            account(answered, list(range(n)))
            for g in range(n):
                records[g] = {"query": str(instruction), "reply": answered["generations"][g]}
        else:
            [written] = yield [Call(chat, n)]
            account(written, list(range(n)))
            for g in range(n):
                records[g] = {"query": _clean_request(written["generations"][g]), "request": written["generations"][g]}
            asked = [g for g in range(n) if records[g]["query"]]
            if asked:
                kwargs = self._calls_kwargs(tools)
                replies = yield [Call(self._calls_chat(records[g]["query"], tools), 1, g, kwargs) for g in asked]
                for g, reply in zip(asked, replies, strict=True):
                    account(reply, [g])
                    records[g]["reply"] = reply["generations"][0]

        parsed = {g: parse_tool_calls(records[g].get("reply"))[0] for g in range(n)}
        # The judge's calls and the run of the tool calls go out together: the run is work the
        # driver does beside its event loop (Call.run), so a slow or hanging function holds up
        # this row only, never the requests of the others.
        judged = [g for g in range(n) if parsed[g]] if self.semantic_check else []
        batch = [self._judge_call(records[g]["query"], tools, parsed[g], g) for g in judged]
        run = self._tool_run(tools, parsed)
        if run is not None:
            batch.append(Call([], 1, run=run[0]))
        if batch:
            answers = yield batch
            for g, verdict in zip(judged, answers, strict=False):
                account(verdict, [g])
                records[g]["judge"] = verdict["generations"][0]
            if run is not None:
                self._collect(answers[-1], run[1], records)

        texts: list[str | None] = [
            json.dumps(r, ensure_ascii=False) if r.get("query") or r.get("request") or r.get("reply") else None
            for r in records
        ]
        output: GenerateOutput = {
            "generations": texts,
            "statistics": {"input_tokens": tokens_in, "output_tokens": tokens_out},
        }
        if any(errors):
            output["errors"] = errors
        return output

    def _tool_run(
        self, tools: list[dict[str, Any]], parsed: dict[int, list[dict[str, Any]]]
    ) -> tuple[Callable[[], GenerateOutput], list[tuple[int, int]]] | None:
        """The valid calls of every generation, run in one child by the returned function, and
        where each goes; None when nothing is to run."""
        if self.functions is None:
            return None
        from taskloom_synth.tool_runner import run_tool_calls

        where: list[tuple[int, int]] = []
        calls: list[tuple[str, Any]] = []
        for g, generation in parsed.items():
            for i, call in enumerate(generation):
                if not self._call_errors(call, tools):
                    where.append((g, i))
                    calls.append((call["name"], call["arguments"]))
        if not calls:
            return None
        source, timeout = self.functions, self.execution_timeout

        def run() -> GenerateOutput:
            results = run_tool_calls(source, calls, timeout)
            encoded = [{"result": r.result, "error": r.error} for r in results]
            return {"generations": [json.dumps(encoded, ensure_ascii=False)], "statistics": {}}

        return run, where

    @staticmethod
    def _collect(output: GenerateOutput, where: list[tuple[int, int]], records: list[dict[str, Any]]) -> None:
        text = output["generations"][0] if output["generations"] else None
        results = json.loads(text) if text else [{"result": None, "error": output.get("error")}] * len(where)
        for (g, i), result in zip(where, results, strict=True):
            records[g].setdefault("execution", {})[str(i)] = {"result": result["result"], "error": result["error"]}

    # -- checking calls and building the row ------------------------------------------------------

    def _call_errors(self, call: dict[str, Any], tools: list[dict[str, Any]]) -> list[str]:
        specs = {spec["function"]["name"]: spec["function"] for spec in tools}
        name = call["name"]
        if name not in specs:
            return [f"unknown tool {name!r} (the tools are {sorted(specs)})"]
        arguments = call["arguments"]
        if not isinstance(arguments, dict):
            return [f"{name}: the arguments are not a JSON object: {json.dumps(arguments, default=str)[:200]}"]
        schema = specs[name]["parameters"]
        key = json.dumps(schema, sort_keys=True)
        validator = self._validators.get(key)
        if validator is None:
            from jsonschema.validators import validator_for

            validator = self._validators[key] = validator_for(schema)(schema)
        problems = sorted(validator.iter_errors(arguments), key=lambda e: list(e.path))
        return [f"{name}: {'/'.join(str(p) for p in e.path) or 'arguments'}: {e.message}" for e in problems]

    def format_output(self, output: str | None, input: Row | None = None) -> dict[str, Any]:
        if output is None:
            raise ValueError("no text came back for this generation")
        row = input or {}
        record = json.loads(output)
        tools = self._row_tools(row)
        query: str | None = record.get("query")
        calls, prose = parse_tool_calls(record.get("reply"))
        errors: list[str] = []
        if not query:
            errors.append("no user request could be read from the reply")
        elif record.get("reply") is None:
            errors.append("the tool-call request got no reply")
        elif not calls:
            errors.append("the reply makes no tool call")
        elif _cut_off(record.get("reply")):
            errors.append("the reply is not complete JSON (cut off by max_new_tokens?): its calls may be partial")
        checked = [self._call_errors(call, tools) for call in calls]
        for index, problems in enumerate(checked):
            errors.extend(f"call {index}: {p}" for p in problems)

        ids = [call.get("id") or f"call_{index}" for index, call in enumerate(calls)]
        executed = record.get("execution") or {}
        execution: list[dict[str, Any]] | None = None
        if self.functions is not None and calls:
            execution = []
            for index, call in enumerate(calls):
                ran = executed.get(str(index))
                if ran is None:
                    ran = {"result": None, "error": "not run: the call is invalid"}
                execution.append({"name": call["name"], "result": ran["result"], "error": ran["error"]})

        messages: list[dict[str, Any]] | None = None
        if query:
            messages = [{"role": "user", "content": query}]
            if calls:
                messages.append(
                    {
                        "role": "assistant",
                        "content": prose or "",
                        "tool_calls": [
                            {
                                "id": ids[index],
                                "type": "function",
                                "function": {"name": call["name"], "arguments": self._arguments(call["arguments"])},
                            }
                            for index, call in enumerate(calls)
                        ],
                    }
                )
                for index, ran in enumerate(execution or []):
                    content = ran["result"] if ran["error"] is None else f"Error: {ran['error']}"
                    messages.append(
                        {"role": "tool", "tool_call_id": ids[index], "name": calls[index]["name"], "content": content}
                    )
            elif prose:
                messages.append({"role": "assistant", "content": prose})

        verdict, reason = _verdict(record.get("judge")) if self.semantic_check and calls else (None, None)
        return {
            "query": query,
            "answers": json.dumps([{"name": c["name"], "arguments": c["arguments"]} for c in calls], ensure_ascii=False)
            if calls
            else None,
            "valid": bool(calls) and not any(checked) and not errors,
            "errors": errors,
            "execution": execution,
            "semantic_check": verdict,
            "semantic_reason": reason,
            "messages": messages,
            "tools": json.dumps(tools, ensure_ascii=False) if self.tools_format == "json" else tools,
        }

    def _arguments(self, arguments: Any) -> Any:
        if self.arguments_format == "object":
            return arguments
        return arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
