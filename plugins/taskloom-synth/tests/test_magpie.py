"""``magpie``: the prompts it builds from a chat template's markup, its turns, seeds and rows.

The logic runs against scripted LLMs (so the prompts can be checked to the character); the
local model and a real llama.cpp server run it in tests/test_synth_local.py and the openai
plugin's llama-server tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from jinja2 import Environment
from taskloom_synth.chat_markup import TemplateError, from_template, named

from taskloom import Pipeline, get_task
from taskloom.pipeline.graph import PipelineError
from taskloom.testing import ScriptedLLM

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}<|im_start|>assistant\n"
)
CHATML_DEFAULT_SYSTEM = (
    "{% if messages[0].role != 'system' %}<|im_start|>system\nBe kind.<|im_end|>\n{% endif %}" + CHATML
)
GEMMA = (
    "<bos>{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}<start_of_turn>{{ 'model' if m.role == 'assistant' else m.role }}\n{{ m.content | trim }}"
    "<end_of_turn>\n{% endfor %}<start_of_turn>model\n"
)


def renderer(template: str) -> Any:
    def raise_exception(message: str) -> None:
        raise ValueError(message)

    compiled = Environment().from_string(template)
    return lambda messages: compiled.render(messages=messages, raise_exception=raise_exception)


def answers(chat: Any, index: int) -> str:
    """Raw text (a user turn being written) gets a question; a chat gets an answer to its last message."""
    if isinstance(chat, str):
        return f"Question {chat.count('<|im_start|>user')}?"
    return f"Answer to {chat[-1]['content']}"


def scripted(**fields: Any) -> ScriptedLLM:
    return ScriptedLLM(reply=answers, **fields)


def test_the_markup_read_from_a_template_matches_the_named_family() -> None:
    read = from_template(renderer(CHATML), "m")
    family = named("chatml")
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    for system in (None, "Be brief."):
        assert read.pre_query(system, history) == family.pre_query(system, history)  # type: ignore[arg-type]
    assert read.stops == ("<|im_end|>",)


def test_a_default_system_prompt_and_a_template_without_a_system_role() -> None:
    read = from_template(renderer(CHATML_DEFAULT_SYSTEM), "m")
    assert read.pre_query(None, []) == "<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\n"
    assert read.pre_query("Be terse.", []) == "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\n"
    gemma = from_template(renderer(GEMMA), "g")
    assert gemma.system_before is None
    assert gemma.pre_query("Be terse.", []) == "<bos><start_of_turn>user\nBe terse.\n\n"
    assert gemma.pre_query(None, [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]) == (
        "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nYo<end_of_turn>\n<start_of_turn>user\n"
    )
    assert named("gemma").pre_query("Be terse.", []) == gemma.pre_query("Be terse.", [])


def test_a_template_that_drops_the_messages_is_refused_with_what_to_do() -> None:
    with pytest.raises(TemplateError, match="name its family"):
        from_template(lambda messages: "<|im_start|>assistant\n", "odd")


def test_one_turn_sends_the_template_text_as_raw_text_then_answers_it() -> None:
    llm = scripted()
    task = get_task("magpie", llm=llm, template="chatml", system_prompt="You teach maths.")
    task.load()
    [row] = next(task.process([{}]))
    first, second = llm.calls
    assert first["input"] == "<|im_start|>system\nYou teach maths.<|im_end|>\n<|im_start|>user\n"
    assert first["kwargs"]["stop"] == ["<|im_end|>", "<|im_start|>"]
    assert second["input"] == [
        {"role": "system", "content": "You teach maths."},
        {"role": "user", "content": "Question 1?"},
    ]
    assert row["instruction"] == "Question 1?" and row["response"] == "Answer to Question 1?"
    assert row["model_name"] == "scripted"
    assert row["distilabel_metadata"]["raw_input_magpie"] == first["input"]


def test_several_turns_make_a_conversation_each_turn_built_on_the_last() -> None:
    llm = scripted()
    task = get_task("magpie", llm=llm, template="chatml", n_turns=3, system_prompt="S")
    task.load()
    [row] = next(task.process([{}]))
    assert [m["role"] for m in row["conversation"]] == ["system", *["user", "assistant"] * 3]
    assert row["conversation"][5] == {"role": "user", "content": "Question 3?"}
    third_user_prompt = llm.calls[4]["input"]
    assert third_user_prompt.endswith("Answer to Question 2?<|im_end|>\n<|im_start|>user\n")
    ended = get_task("magpie", llm=scripted(), template="chatml", n_turns=2, end_with_user=True)
    ended.load()
    [row] = next(ended.process([{}]))
    assert [m["role"] for m in row["conversation"]] == ["user", "assistant", "user"]


def test_only_instruction_asks_once() -> None:
    llm = scripted()
    task = get_task("magpie", llm=llm, template="llama-3", only_instruction=True)
    task.load()
    [row] = next(task.process([{}]))
    assert len(llm.calls) == 1 and set(row) >= {"instruction"} and "response" not in row
    assert llm.calls[0]["input"] == "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"


def test_rows_get_seeds_of_their_own_and_the_same_ones_every_time() -> None:
    def seeds(rows: list[dict[str, Any]]) -> list[int]:
        llm = scripted()
        task = get_task("magpie", llm=llm, template="chatml", only_instruction=True)
        task.load()
        next(task.process(rows))
        return [call["kwargs"]["seed"] for call in llm.calls]

    first = seeds([{"seed": 0}, {"seed": 1}, {"seed": 2}])
    assert len(set(first)) == 3
    assert seeds([{"seed": 0}, {"seed": 1}, {"seed": 2}]) == first
    assert seeds([{"seed": 2}]) == first[2:]  # a row's seed does not depend on its neighbours


def test_system_prompts_drawn_from_a_list_or_by_weight() -> None:
    llm = scripted()
    weighted = get_task(
        "magpie",
        llm=llm,
        template="chatml",
        only_instruction=True,
        system_prompt={"maths": ["You teach maths.", 3.0], "never": ["Never used.", 0.0], "cook": ["You cook.", 1.0]},
    )
    weighted.load()
    rows = next(weighted.process([{"seed": i} for i in range(200)]))
    keys = [row["system_prompt_key"] for row in rows]
    assert "never" not in keys
    assert 0.6 < keys.count("maths") / len(keys) < 0.9
    own = next(weighted.process([{"system_prompt": "Row's own.", "seed": 1}]))[0]
    assert "Row's own." in own["distilabel_metadata"]["raw_input_magpie"]


def test_it_makes_its_own_rows_and_a_rerun_sends_nothing(tmp_path: Path) -> None:
    llm = scripted()
    task = get_task("magpie", llm=llm, template="chatml", num_rows=5)
    first = Pipeline(task, name="magpie").run(output=tmp_path, progress=None)
    rows = list(first.rows())
    assert [row["seed"] for row in rows] == [0, 1, 2, 3, 4]
    assert all(row["instruction"] and row["response"] for row in rows)
    assert len(llm.calls) == 10
    again = Pipeline(task, name="magpie").run(output=tmp_path, progress=None)
    assert len(llm.calls) == 10  # every call came from the cache
    assert again.stats.steps[task.name].cached == 10
    with pytest.raises(PipelineError, match="makes its own rows"):
        Pipeline(task, source=[{"x": 1}]).validate()


def test_an_llm_without_raw_text_is_refused_when_the_task_is_built() -> None:
    chat_only = ScriptedLLM(model="chat-api", raw_text=False)
    with pytest.raises(ValueError, match=r"magpie.*raw text.*scripted \(chat-api\)"):
        get_task("magpie", llm=chat_only)


def test_auto_needs_a_template_it_can_read() -> None:
    task = get_task("magpie", llm=scripted())
    task.load()
    with pytest.raises(TemplateError, match="set template to its family: chatml"):
        next(task.process([{}]))


def test_bad_settings_say_what_is_valid() -> None:
    with pytest.raises(ValueError, match="template 'vicuna' is not known"):
        get_task("magpie", llm=scripted(), template="vicuna")
    with pytest.raises(ValueError, match="only_instruction writes one instruction"):
        get_task("magpie", llm=scripted(), only_instruction=True, n_turns=2)
    with pytest.raises(ValueError, match="weights add up to 0"):
        get_task("magpie", llm=scripted(), system_prompt={"a": ["x", 0]})


def test_a_turn_that_fails_keeps_what_was_written() -> None:
    def failing(chat: Any, index: int) -> str | None:
        return None if not isinstance(chat, str) else "Question?"

    task = get_task("magpie", llm=ScriptedLLM(reply=failing), template="chatml")
    task.load()
    [row] = next(task.process([{}]))
    assert row["instruction"] is None and row["response"] is None
    assert "Question?" in row["distilabel_metadata"]["raw_output_magpie"]
    assert "assistant message came back empty" in row["distilabel_metadata"]["error_magpie"]


LLAMA3ISH = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n"
    "{{ m.content | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def test_the_template_a_tokenizer_config_or_a_jinja_file_carries(tmp_path: Path) -> None:
    import json

    config = tmp_path / "tokenizer_config.json"
    config.write_text(
        json.dumps({"chat_template": [{"name": "default", "template": LLAMA3ISH}], "bos_token": {"content": "<B>"}})
    )
    llm = scripted()
    task = get_task("magpie", llm=llm, template=str(config), only_instruction=True, system_prompt="Be kind.")
    task.load()
    next(task.process([{}]))
    assert llm.calls[0]["input"] == (
        "<B><|start_header_id|>system<|end_header_id|>\n\nBe kind.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n"
    )
    assert llm.calls[0]["kwargs"]["stop"] == ["<|eot_id|><|start_header_id|>"]
    jinja = tmp_path / "chat.jinja"
    jinja.write_text(CHATML)
    from_file = get_task("magpie", llm=scripted(), template=str(jinja))
    assert from_file.markup().pre_query(None, []) == named("chatml").pre_query(None, [])
    with pytest.raises(TemplateError, match="no such file"):
        get_task("magpie", llm=scripted(), template=str(tmp_path / "missing.json")).markup()
    (tmp_path / "bare.json").write_text("{}")
    with pytest.raises(TemplateError, match="has no chat_template"):
        get_task("magpie", llm=scripted(), template=str(tmp_path / "bare.json")).markup()


def test_the_template_of_a_tokenizer_on_the_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Against the repo's loopback stand-in for the Hub's API (no network here), with the real client."""
    import json

    huggingface_hub = pytest.importorskip("huggingface_hub")
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "taskloom-huggingface" / "tests"))
    from hub_standin import HubStandIn

    with HubStandIn() as hub:
        api = huggingface_hub.HfApi(endpoint=hub.url, token="hf_test_alice")
        api.create_repo("alice/tiny-chat", exist_ok=True)
        config = json.dumps({"chat_template": CHATML}).encode()
        api.upload_file(path_or_fileobj=config, path_in_repo="tokenizer_config.json", repo_id="alice/tiny-chat")
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
        task = get_task("magpie", llm=scripted(), template="hf:alice/tiny-chat")
        assert task.markup().pre_query("S", []) == named("chatml").pre_query("S", [])
        with pytest.raises(TemplateError, match="could not be read"):
            get_task("magpie", llm=scripted(), template="hf:alice/no-such-model").markup()
