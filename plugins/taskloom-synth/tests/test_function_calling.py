"""``function-calling``: tool specs in, requests and checked (optionally executed, judged) tool calls out.

The task's logic runs against scripted LLMs that stand for each way of asking (native tools,
structured output, a prompt only); the providers' ``tools`` requests and tool-call replies
against the scripted loopback servers, checked against the shapes each API documents; the
execution against real child processes; one short run on the bundled local model.
"""

from __future__ import annotations

import json
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import Field, ValidationError
from taskloom_synth.function_calling import FunctionCalling, check_tools, parse_tool_calls
from taskloom_synth.tool_runner import NETWORK_REFUSED, run_tool_calls

from taskloom import Pipeline, get_task
from taskloom.llms.options import GenerationOptions, OutputSchema
from taskloom.testing import ScriptedAsyncLLM, ScriptedLLM, processed
from taskloom.typing import ChatType

PLUGINS = Path(__file__).resolve().parents[2]
for helpers in ("taskloom-openai/tests", "taskloom-anthropic/tests"):
    if str(PLUGINS / helpers) not in sys.path:
        sys.path.insert(0, str(PLUGINS / helpers))

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name."},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}
TOOLS = [WEATHER, ADD]
REQUEST = "What's the weather in Paris right now, in celsius?"
CALLS = {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}]}
YES = json.dumps({"reason": "It asks for Paris in celsius.", "verdict": "yes"})


def _content(chat: ChatType) -> str:
    assert not isinstance(chat, str)
    return "\n".join(str(m["content"]) for m in chat)


def scripted(calls: Any = CALLS, judge: str = YES, request: str = REQUEST) -> Any:
    """A reply function that answers each of the task's three requests by what it asks."""

    def reply(chat: ChatType, index: int) -> str:
        text = _content(chat)
        if "Check whether an assistant's function calls" in text:
            return judge
        if "Write one message that a real user could send" in text:
            return request
        return calls if isinstance(calls, str) else json.dumps(calls)

    return reply


class _StructuredOptions(GenerationOptions):
    structured_output: OutputSchema | None = Field(default=None, description="Recorded, not enforced.")


class _ToolOptions(_StructuredOptions):
    tools: list[dict[str, Any]] | None = Field(default=None, description="Recorded: native tools.")
    tool_choice: str | dict[str, Any] | None = Field(default=None, description="Recorded.")


class StructuredScripted(ScriptedLLM):
    """Stands for the local model: takes a JSON schema, no native tools."""

    Options = _StructuredOptions
    registry_name: ClassVar[str | None] = None


class NativeScripted(ScriptedLLM):
    """Stands for an API with native tool calling."""

    Options = _ToolOptions
    registry_name: ClassVar[str | None] = None


# -- the three ways of asking -----------------------------------------------------------------------


def test_prompted_llm_gets_the_specs_in_the_prompt_and_its_answer_is_read_leniently() -> None:
    fenced = "Sure! Here you go:\n```json\n" + json.dumps(CALLS["tool_calls"]) + "\n```"
    llm = ScriptedLLM(reply=scripted(calls=fenced))
    [row] = processed(FunctionCalling(llm=llm), [{"tools": TOOLS, "topic": "travel"}])

    assert row["query"] == REQUEST
    assert json.loads(row["answers"]) == CALLS["tool_calls"]
    assert row["valid"] is True and row["errors"] == []
    assert row["semantic_check"] is True and row["semantic_reason"] == "It asks for Paris in celsius."
    assert row["execution"] is None
    request, calls, judge = llm.calls
    assert "travel" in _content(request["input"]) and "get_weather" in _content(request["input"])
    assert calls["input"][0]["role"] == "system" and "get_weather" in calls["input"][0]["content"]
    assert calls["input"][1] == {"role": "user", "content": REQUEST}
    assert calls["kwargs"] == {} and "Paris" in _content(judge["input"])
    assert row["messages"] == [
        {"role": "user", "content": REQUEST},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_0",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'},
                }
            ],
        },
    ]
    assert row["tools"] == TOOLS
    meta = row["distilabel_metadata"]
    assert json.loads(meta["raw_output_function-calling"])["reply"] == fenced  # every paid-for text kept
    assert meta["statistics_function-calling"]["output_tokens"] > 0


def test_structured_llm_gets_a_schema_whose_tool_names_are_an_enum() -> None:
    llm = StructuredScripted(reply=scripted())
    [row] = processed(FunctionCalling(llm=llm, tools=TOOLS), [{}])  # tools given once, on the task
    assert row["valid"] is True
    _, calls, judge = llm.calls
    schema = calls["kwargs"]["structured_output"]
    weather, add = schema["properties"]["tool_calls"]["items"]["anyOf"]  # one branch per tool
    assert weather["properties"]["name"]["enum"] == ["get_weather"]
    assert weather["properties"]["arguments"] == WEATHER["function"]["parameters"]
    assert add["properties"]["name"]["enum"] == ["add"]
    assert schema["properties"]["tool_calls"]["minItems"] == 1
    assert judge["kwargs"]["structured_output"]["properties"]["verdict"]["enum"] == ["yes", "no"]

    names_only = StructuredScripted(reply=scripted())
    processed(FunctionCalling(llm=names_only, tools=TOOLS, grammar_arguments=False), [{}])
    item = names_only.calls[1]["kwargs"]["structured_output"]["properties"]["tool_calls"]["items"]
    assert item["properties"]["name"]["enum"] == ["get_weather", "add"]
    assert item["properties"]["arguments"] == {"type": "object"}


def test_native_llm_gets_the_tools_as_an_option_and_the_request_as_a_plain_user_message() -> None:
    native = json.dumps({"tool_calls": [{"id": "call_abc", "name": "add", "arguments": {"a": 2, "b": 3}}]})
    llm = NativeScripted(reply=scripted(calls=native))
    [row] = processed(FunctionCalling(llm=llm, arguments_format="object"), [{"tools": json.dumps(TOOLS)}])
    _, calls, _ = llm.calls
    assert calls["kwargs"]["tools"] == TOOLS and calls["kwargs"]["tool_choice"] == "required"
    assert calls["input"] == [{"role": "user", "content": REQUEST}]  # no tool list in the prompt
    assert row["messages"][1]["tool_calls"] == [
        {"id": "call_abc", "type": "function", "function": {"name": "add", "arguments": {"a": 2, "b": 3}}}
    ]
    assert row["tools"] == TOOLS  # a JSON string in, the list of specs out


def test_an_instruction_in_the_row_is_answered_as_it_is_and_generations_are_separate() -> None:
    llm = ScriptedLLM(reply=scripted())
    task = FunctionCalling(llm=llm, num_generations=2, semantic_check=False)
    rows = processed(task, [{"tools": TOOLS, "instruction": "Weather in Paris, celsius please."}])
    assert len(rows) == 2 and len(llm.calls) == 1 and llm.calls[0]["num_generations"] == 2
    assert all(r["query"] == "Weather in Paris, celsius please." and r["valid"] for r in rows)
    assert all(r["semantic_check"] is None for r in rows)


# -- checks ------------------------------------------------------------------------------------------


def test_a_bad_tool_spec_on_the_task_fails_at_construction_naming_the_tool() -> None:
    bad = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "required": 3}}}
    with pytest.raises(ValidationError, match=r"'get_weather'.*not a valid JSON Schema"):
        FunctionCalling(llm=ScriptedLLM(), tools=[bad])
    with pytest.raises(ValidationError, match="not an OpenAI tool spec"):
        FunctionCalling(llm=ScriptedLLM(), tools=[{"name": "get_weather", "parameters": {}}])


def test_a_bad_tool_spec_in_a_row_fails_that_row_only_without_asking_the_llm() -> None:
    bad_type = {"type": "function", "function": {"name": "broken", "parameters": {"type": "strin"}}}
    llm = ScriptedLLM(reply=scripted())
    rows = processed(FunctionCalling(llm=llm), [{"tools": [bad_type]}, {"tools": TOOLS}, {"tools": "not json"}])
    first, second, third = rows
    assert first["query"] is None and "tool 0 ('broken')" in first["distilabel_metadata"]["error_function-calling"]
    assert "not valid JSON" in third["distilabel_metadata"]["error_function-calling"]
    assert second["valid"] is True
    assert len(llm.calls) == 3  # the good row's three calls, nothing for the bad ones


def test_invalid_arguments_and_unknown_tools_are_kept_and_marked() -> None:
    calls = {
        "tool_calls": [
            {"name": "add", "arguments": {"a": "two", "b": 3}},
            {"name": "get_weather", "arguments": {"unit": "kelvin"}},
            {"name": "launch_rocket", "arguments": {}},
        ]
    }
    [row] = processed(FunctionCalling(llm=ScriptedLLM(reply=scripted(calls=calls))), [{"tools": TOOLS}])
    assert row["valid"] is False
    assert [c["name"] for c in json.loads(row["answers"])] == ["add", "get_weather", "launch_rocket"]
    text = "\n".join(row["errors"])
    assert "call 0: add: a: 'two' is not of type 'integer'" in text
    assert "call 1: get_weather: arguments: 'city' is a required property" in text
    assert "call 1: get_weather: unit: 'kelvin' is not one of" in text
    assert "call 2: unknown tool 'launch_rocket'" in text
    assert len(row["messages"][1]["tool_calls"]) == 3


def test_a_reply_without_tool_calls_is_marked_not_dropped() -> None:
    llm = ScriptedLLM(reply=scripted(calls="I cannot help with that."))
    [row] = processed(FunctionCalling(llm=llm), [{"tools": TOOLS}])
    assert row["valid"] is False and row["errors"] == ["the reply makes no tool call"]
    assert row["answers"] is None and row["semantic_check"] is None  # nothing to judge, no judge asked
    assert row["messages"][-1] == {"role": "assistant", "content": "I cannot help with that."}
    assert len(llm.calls) == 2


def test_a_reply_cut_off_by_the_token_limit_keeps_its_calls_but_is_not_valid() -> None:
    cut = '{"tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 2}}, {"name": "get_weather", "argu'
    [row] = processed(FunctionCalling(llm=StructuredScripted(reply=scripted(calls=cut))), [{"tools": TOOLS}])
    assert json.loads(row["answers"]) == [{"name": "add", "arguments": {"a": 1, "b": 2}}]
    assert row["valid"] is False and "not complete JSON" in row["errors"][0]


def test_lenient_parsing_of_what_prompted_models_write() -> None:
    assert parse_tool_calls('{"name": "add", "arguments": "{\\"a\\": 1, \\"b\\": 2}"}')[0] == [
        {"name": "add", "arguments": {"a": 1, "b": 2}}
    ]
    assert parse_tool_calls('[{"function": {"name": "add", "parameters": {"a": 1}}}]')[0] == [
        {"name": "add", "arguments": {"a": 1}}
    ]
    assert parse_tool_calls("no json here") == ([], "no json here")
    assert check_tools(WEATHER) == [WEATHER]  # one spec is a list of one


# -- execution ---------------------------------------------------------------------------------------

FUNCTIONS = textwrap.dedent(
    """
    import os, socket, time

    def add(a, b):
        return a + b

    def get_weather(city, unit="celsius"):
        if city == "Hang":
            time.sleep(60)
        if city == "Crash":
            os._exit(7)
        if city == "Net":
            socket.create_connection(("example.com", 80), timeout=2)
        if city == "Boom":
            raise RuntimeError("no weather today")
        print("noise on stdout does not break the protocol")
        return {"city": city, "temperature": 21, "unit": unit}
    """
)


@pytest.fixture
def functions(tmp_path: Path) -> str:
    path = tmp_path / "my_tools.py"
    path.write_text(FUNCTIONS)
    return str(path)


def test_calls_run_against_the_users_functions_and_results_go_in_the_messages(functions: str) -> None:
    calls = {
        "tool_calls": [
            {"name": "get_weather", "arguments": {"city": "Paris"}},
            {"name": "add", "arguments": {"a": 2, "b": 3}},
            {"name": "add", "arguments": {"a": "x"}},  # invalid: not run
        ]
    }
    task = FunctionCalling(llm=ScriptedLLM(reply=scripted(calls=calls)), functions=functions)
    [row] = processed(task, [{"tools": TOOLS}])
    first, second, third = row["execution"]
    assert json.loads(first["result"]) == {"city": "Paris", "temperature": 21, "unit": "celsius"}
    assert second == {"name": "add", "result": "5", "error": None}
    assert third["result"] is None and third["error"] == "not run: the call is invalid"
    tool_messages = row["messages"][2:]
    ids = [c["id"] for c in row["messages"][1]["tool_calls"]]
    assert [m["role"] for m in tool_messages] == ["tool"] * 3
    assert [m["tool_call_id"] for m in tool_messages] == ids
    assert tool_messages[1]["content"] == "5" and tool_messages[1]["name"] == "add"


def test_a_hang_a_crash_an_exception_and_the_network_each_fail_their_own_call(functions: str) -> None:
    calls = [("get_weather", {"city": c}) for c in ("Hang", "Crash", "Boom", "Net", "Rome")]
    started = time.monotonic()
    hang, crash, boom, net, rome = run_tool_calls(functions, calls, timeout=1.0)
    assert time.monotonic() - started < 10
    assert hang.error is not None and hang.error.startswith("TimeoutError")
    assert crash.error is not None and "exit code 7" in crash.error
    assert boom.error == "RuntimeError: no weather today"
    assert net.error == f"PermissionError: {NETWORK_REFUSED}"
    assert rome.error is None and rome.result is not None and json.loads(rome.result)["city"] == "Rome"


def test_a_hanging_function_gives_its_row_a_timeout_and_the_run_goes_on(functions: str) -> None:
    def reply(chat: ChatType, index: int) -> str:
        text = _content(chat)
        if "Write one message" in text:
            return "Weather in Hang please" if "hang" in text else "Weather in Oslo please"
        city = "Hang" if "Hang" in text else "Oslo"
        return json.dumps({"tool_calls": [{"name": "get_weather", "arguments": {"city": city}}]})

    task = FunctionCalling(llm=ScriptedLLM(reply=reply), functions=functions, execution_timeout=1.0)
    task.semantic_check = False
    hung, fine = processed(task, [{"tools": TOOLS, "topic": "hang"}, {"tools": TOOLS, "topic": "oslo"}])
    assert hung["execution"][0]["error"].startswith("TimeoutError")
    assert hung["messages"][-1]["content"].startswith("Error: TimeoutError")
    assert fine["execution"][0]["error"] is None and "Oslo" in fine["execution"][0]["result"]


def test_in_a_pipeline_a_hanging_function_holds_up_only_its_own_row(functions: str, tmp_path: Path) -> None:
    """The run of a row's calls is done beside the event loop: while one row's function hangs
    until its timeout, every other row is asked, run and finished."""
    finished: dict[str, float] = {}

    def reply(chat: ChatType, index: int) -> str:
        text = _content(chat)
        city = "Hang" if "Hang" in text else "Oslo" if "Oslo" in text else "Rome"
        finished[city] = time.monotonic()
        return json.dumps({"tool_calls": [{"name": "get_weather", "arguments": {"city": city}}]})

    llm = ScriptedAsyncLLM(reply=reply, delay=0.05)
    task = FunctionCalling(llm=llm, functions=functions, execution_timeout=4.0, semantic_check=False)
    rows = [{"tools": TOOLS, "instruction": f"Weather in {city}?"} for city in ("Hang", "Oslo", "Rome")]
    started = time.monotonic()
    result = Pipeline(task, source=rows, name="hang").run(output=tmp_path / "run", progress=None)
    hung, oslo, rome = result.rows()
    assert hung["execution"][0]["error"].startswith("TimeoutError")
    assert oslo["execution"][0]["error"] is None and rome["execution"][0]["error"] is None
    # The other rows' requests were made well within the hanging call's 4 s.
    assert finished["Oslo"] - started < 2.0 and finished["Rome"] - started < 2.0


def test_functions_that_cannot_be_loaded_fail_every_call_with_why(tmp_path: Path) -> None:
    [result] = run_tool_calls("no_such_module_anywhere", [("add", {"a": 1, "b": 2})])
    assert result.error is not None and "ModuleNotFoundError" in result.error


# -- TRL's format --------------------------------------------------------------------------------------

# A tool-calling chat template in the style of the Hermes / Qwen 2.5 ones (written for this test):
# it reads `tools` and each assistant `tool_calls[].function`, and `tool` messages.
TEMPLATE = (
    "{% if tools %}<tools>{% for t in tools %}{{ t.function | tojson }}{% endfor %}</tools>\n{% endif %}"
    "{% for m in messages %}<|{{ m.role }}|>"
    '{% if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>{"name": "{{ c.function.name }}", '
    '"arguments": {% if c.function.arguments is string %}{{ c.function.arguments }}'
    "{% else %}{{ c.function.arguments | tojson }}{% endif %}}</tool_call>{% endfor %}"
    "{% else %}{{ m.content }}{% endif %}\n{% endfor %}"
)


@pytest.mark.parametrize("arguments_format", ["json", "object"])
def test_rows_read_as_trl_tool_calling_data(functions: str, arguments_format: str) -> None:
    import jinja2

    task = FunctionCalling(llm=ScriptedLLM(reply=scripted()), functions=functions, arguments_format=arguments_format)
    [row] = processed(task, [{"tools": TOOLS}])
    messages, tools = row["messages"], row["tools"]
    # TRL: a `messages` column of role/content turns, assistant `tool_calls` of type function, `tool`
    # replies, and a `tools` column of JSON-schema function specs.
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    assert all(isinstance(m["content"], str) for m in messages)
    [call] = messages[1]["tool_calls"]
    assert call["type"] == "function" and set(call["function"]) == {"name", "arguments"}
    assert isinstance(tools, list) and all(t["type"] == "function" and "parameters" in t["function"] for t in tools)

    environment = jinja2.Environment()
    environment.filters["tojson"] = lambda value: json.dumps(value)
    text = environment.from_string(TEMPLATE).render(messages=messages, tools=tools)
    assert '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}</tool_call>' in text
    assert '"temperature": 21' in text and "<tools>" in text

    datasets = pytest.importorskip("datasets")
    json_task = FunctionCalling(llm=ScriptedLLM(reply=scripted()), tools_format="json")
    dataset = datasets.Dataset.from_list(
        [{"messages": r["messages"], "tools": r["tools"]} for r in processed(json_task, [{"tools": TOOLS}] * 2)]
    )
    assert dataset.column_names == ["messages", "tools"] and json.loads(dataset[0]["tools"]) == TOOLS


# -- the providers' native tool calls, as their APIs document them ---------------------------------


def test_openai_sends_tools_and_reads_tool_calls() -> None:
    from openai_scripted_http import Reply, ScriptedServer
    from taskloom_openai import OpenAILLM

    answer = Reply(
        body={
            "id": "chatcmpl-tools",
            "object": "chat.completion",
            "created": 0,
            "model": "scripted",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "call_Xy1",
                                "type": "function",
                                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                            },
                            {"id": "call_Xy2", "type": "function", "function": {"name": "add", "arguments": "{oops"}},
                        ],
                    },
                    "finish_reason": "tool_calls",
                }
            ],
            "usage": {"prompt_tokens": 50, "completion_tokens": 20, "total_tokens": 70},
        }
    )
    with ScriptedServer([answer]) as server:
        llm = OpenAILLM(model="gpt-test", base_url=f"{server.url}/v1", api_key="sk-test")
        assert llm.accepts("tools")
        llm.load()
        try:
            [output] = llm.generate([[{"role": "user", "content": REQUEST}]], tools=TOOLS, tool_choice="required")
        finally:
            llm.unload()
        [request] = server.requests
    assert request.body["tools"] == TOOLS and request.body["tool_choice"] == "required"
    assert json.loads(output["generations"][0] or "") == {
        "tool_calls": [
            {"id": "call_Xy1", "name": "get_weather", "arguments": {"city": "Paris"}},
            {"id": "call_Xy2", "name": "add", "arguments": "{oops"},  # not JSON: kept as written
        ]
    }


def test_openai_without_tools_sends_no_tool_fields() -> None:
    from openai_scripted_http import ScriptedServer, completion
    from taskloom_openai import OpenAILLM

    with ScriptedServer([completion(["hi"])]) as server:
        llm = OpenAILLM(model="gpt-test", base_url=f"{server.url}/v1", api_key="sk-test")
        llm.load()
        try:
            [output] = llm.generate([[{"role": "user", "content": "hello"}]])
        finally:
            llm.unload()
        assert "tools" not in server.requests[0].body and "tool_choice" not in server.requests[0].body
    assert output["generations"] == ["hi"]


def test_anthropic_sends_tools_in_its_shape_and_reads_tool_use_blocks() -> None:
    from anthropic_scripted_http import Reply, ScriptedServer
    from taskloom_anthropic import AnthropicLLM

    answer = Reply(
        body={
            "id": "msg_tools",
            "type": "message",
            "role": "assistant",
            "model": "claude-test",
            "content": [
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}},
            ],
            "stop_reason": "tool_use",
            "stop_sequence": None,
            "usage": {"input_tokens": 60, "output_tokens": 25},
        }
    )
    with ScriptedServer([answer]) as server:
        llm = AnthropicLLM(model="claude-test", base_url=server.url, api_key="sk-ant-test")
        assert llm.accepts("tools")
        llm.load()
        try:
            [output] = llm.generate([[{"role": "user", "content": REQUEST}]], tools=TOOLS, tool_choice="required")
        finally:
            llm.unload()
        [request] = server.requests
    assert request.body["tools"] == [
        {
            "name": "get_weather",
            "input_schema": WEATHER["function"]["parameters"],
            "description": "Current weather in a city.",
        },
        {"name": "add", "input_schema": ADD["function"]["parameters"], "description": "Add two integers."},
    ]
    assert request.body["tool_choice"] == {"type": "any"}
    assert json.loads(output["generations"][0] or "") == {
        "tool_calls": [{"id": "toolu_01", "name": "get_weather", "arguments": {"city": "Paris"}}],
        "content": "Let me check.",
    }


def test_the_task_end_to_end_on_openai_native_tool_calls() -> None:
    from openai_scripted_http import Reply, ScriptedServer, completion
    from taskloom_openai import OpenAILLM

    def answer(body: Any) -> Reply:
        if "tools" in body:
            calls = [{"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}}]
            message = {"role": "assistant", "content": None, "tool_calls": calls}
            reply = completion(["x"]).body
            assert isinstance(reply, dict)
            reply["choices"][0]["message"] = message
            return Reply(body=reply)
        if "response_format" in body:
            return completion([YES])
        return completion(["Please add 1 and 2."])

    with ScriptedServer([answer]) as server:
        task = get_task("function-calling", llm=OpenAILLM(model="gpt-test", base_url=f"{server.url}/v1", api_key="k"))
        assert isinstance(task, FunctionCalling)
        [row] = processed(task, [{"tools": TOOLS}])
        bodies = [r.body for r in server.requests]
    assert [("tools" in b, "response_format" in b) for b in bodies] == [(False, False), (True, False), (False, True)]
    assert bodies[1]["messages"] == [{"role": "user", "content": "Please add 1 and 2."}]
    assert row["valid"] is True and row["semantic_check"] is True
    assert row["messages"][1]["tool_calls"][0] == {
        "id": "call_1",
        "type": "function",
        "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'},
    }


# -- the local model ---------------------------------------------------------------------------------


def test_a_short_real_run_on_the_local_model(functions: str) -> None:
    pytest.importorskip("taskloom_llamacpp", reason="runs on the local default model")
    from taskloom import get_llm

    llm = get_llm("llamacpp", generation_kwargs={"temperature": 0.2, "seed": 3, "max_new_tokens": 64})
    task = FunctionCalling(llm=llm, functions=functions, execution_timeout=5.0)
    rows = processed(task, [{"tools": TOOLS, "topic": "the weather"}])
    assert len(rows) == 1
    for row in rows:
        meta = row["distilabel_metadata"]
        if row["query"] is None:  # failed explicitly, with why or what was paid for
            assert meta.get("error_function-calling") or meta.get("raw_output_function-calling"), row
            continue
        assert isinstance(row["valid"], bool) and isinstance(row["errors"], list)
        assert row["messages"][0] == {"role": "user", "content": row["query"]}
        names = {t["function"]["name"] for t in row["tools"]}
        if row["answers"] is not None:
            # The grammar holds names to the enum: every call names a real tool.
            assert {c["name"] for c in json.loads(row["answers"])} <= names
            assert row["messages"][1]["role"] == "assistant" and row["messages"][1]["tool_calls"]
            assert len(row["execution"]) == len(row["messages"][1]["tool_calls"])
            assert row["semantic_check"] in (True, False, None)
        assert json.loads(meta["raw_output_function-calling"])["query"] == row["query"]


def test_the_documented_example_holds() -> None:
    from taskloom_synth.function_calling import FunctionCalling

    assert FunctionCalling.example is not None
    row_in, row_out = FunctionCalling.example
    llm = ScriptedLLM(
        replies=[
            row_out["query"],
            json.dumps({"tool_calls": [{"name": "get_weather", "arguments": {"city": "Lisbon"}}]}),
            json.dumps({"reason": row_out["semantic_reason"], "verdict": "yes"}),
        ]
    )
    task = get_task("function-calling", llm=llm)
    task.load()
    [row] = next(task.process([row_in]))
    assert {key: row[key] for key in row_out} == row_out
