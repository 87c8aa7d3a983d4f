"""Raw text on the real bundled model: completed as it is, markup read as special tokens, the
GGUF's template rendered as text, and a schema whose string bound is too long for a grammar."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import QUICK
from taskloom_llamacpp import LlamaCppLLM
from taskloom_llamacpp.llm import MAX_GRAMMAR_LENGTH, _schema_text

CHAT: Any = [{"role": "user", "content": "What's the capital city of Spain? Answer in one sentence."}]


@pytest.fixture(scope="module")
def llm() -> LlamaCppLLM:
    return LlamaCppLLM(generation_kwargs={**QUICK, "temperature": 0})


def test_the_template_text_then_raw_text_is_the_same_request_as_the_chat(llm: LlamaCppLLM) -> None:
    text = llm.render_chat(CHAT)
    assert text is not None and text.endswith("<|im_start|>assistant\n")
    assert "<|im_start|>user\nWhat's the capital" in text
    # Completing the template's own text as raw text is what the chat handler does: same answer, same prompt.
    [as_chat, as_text] = llm.generate([CHAT, text], max_new_tokens=12)
    assert as_text["generations"] == as_chat["generations"]
    assert as_text["statistics"]["input_tokens"] == as_chat["statistics"]["input_tokens"]


def test_plain_raw_text_is_continued(llm: LlamaCppLLM) -> None:
    [output] = llm.generate(["The days of the week are Monday, Tuesday,"], max_new_tokens=6, temperature=0)
    assert "Wednesday" in (output["generations"][0] or "")
    assert llm.completes_raw_text()


def test_a_string_bound_too_long_for_a_grammar_is_left_to_max_new_tokens() -> None:
    schema = {
        "type": "object",
        "properties": {
            "short": {"type": "string", "maxLength": 40},
            "long": {"type": "string", "maxLength": MAX_GRAMMAR_LENGTH + 1},
        },
    }
    assert '"maxLength": 40' in _schema_text(schema) and str(MAX_GRAMMAR_LENGTH + 1) not in _schema_text(schema)


def test_an_answer_held_to_a_schema_with_a_very_long_bound_comes_back(llm: LlamaCppLLM) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string", "maxLength": 8000}}, "required": ["answer"]}
    [output] = llm.generate([CHAT], max_new_tokens=24, structured_output=schema)
    assert output["generations"][0] and output["generations"][0].startswith("{")
