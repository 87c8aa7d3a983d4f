"""Images in chats: column values to parts, what rows and the cache keep, and LLMs that read none.

No small vision model ships on PyPI, so nothing here asks a model to look at a picture: the
providers' request shapes are tested against scripted HTTP servers in each plugin's tests.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from taskloom import TextGeneration
from taskloom.errors import BadRequestError, RowInputError
from taskloom.images import has_images, image_data, image_part, image_parts, inline_images, media_type_of
from taskloom.llms.inputs import IMAGE_TOKENS, chat_messages
from taskloom.llms.limits import estimate_tokens
from taskloom.pipeline.budget import Budget
from taskloom.pipeline.cache import generation_key
from taskloom.pricing import Price
from taskloom.testing import ScriptedLLM, processed
from taskloom.testing.images import tiny_gif, tiny_jpeg, tiny_png, tiny_webp
from taskloom.typing import Chat, Row


class SeeingLLM(ScriptedLLM):
    """A scripted LLM that says it reads images, so chats with pictures reach it."""

    def reads_images(self) -> bool:
        return True


@pytest.fixture
def png(tmp_path: Path) -> Path:
    path = tmp_path / "red dot.png"
    path.write_bytes(tiny_png())
    return path


@pytest.mark.parametrize(
    ("raw", "media_type"),
    [(tiny_png(), "image/png"), (tiny_jpeg(), "image/jpeg"), (tiny_gif(), "image/gif"), (tiny_webp(), "image/webp")],
)
def test_the_media_type_comes_from_the_bytes(raw: bytes, media_type: str, tmp_path: Path) -> None:
    assert media_type_of(raw[:16]) == media_type
    misnamed = tmp_path / "picture.bmp"  # the extension says nothing
    misnamed.write_bytes(raw)
    assert image_data(image_part(misnamed)["image_url"]["url"]).media_type == media_type


def test_a_path_becomes_a_file_reference_with_a_digest(png: Path) -> None:
    import hashlib

    for value in (png, str(png), png.as_uri()):
        url = image_part(value)["image_url"]["url"]
        assert url == f"{png.as_uri()}#sha256={hashlib.sha256(tiny_png()).hexdigest()}"
        assert "base64" not in url


def test_bytes_and_data_uris_are_inlined_and_urls_pass_through() -> None:
    inline = "data:image/png;base64," + base64.b64encode(tiny_png()).decode()
    assert image_part(tiny_png())["image_url"]["url"] == inline
    assert image_part({"bytes": tiny_png(), "path": "ignored.png"})["image_url"]["url"] == inline
    assert image_part(inline)["image_url"]["url"] == inline
    # A data URI that says the wrong type is told what its bytes are.
    wrong = "data:image/jpeg;base64," + base64.b64encode(tiny_png()).decode()
    assert image_part(wrong)["image_url"]["url"] == inline
    assert image_part("https://example.com/cat.jpg") == {
        "type": "image_url",
        "image_url": {"url": "https://example.com/cat.jpg"},
    }


def test_a_datasets_image_dict_without_bytes_reads_its_path(png: Path) -> None:
    assert image_part({"bytes": None, "path": str(png)})["image_url"]["url"].startswith(png.as_uri())


def test_missing_and_unsupported_images_are_row_errors_that_say_which(tmp_path: Path) -> None:
    with pytest.raises(RowInputError, match=r"image file not found: .*nowhere\.png"):
        image_part(tmp_path / "nowhere.png")
    bmp = tmp_path / "old.png"
    bmp.write_bytes(b"BM" + bytes(30))
    with pytest.raises(RowInputError, match="is BMP, not an image type"):
        image_part(bmp)
    with pytest.raises(RowInputError, match="image value of type int"):
        image_part(3)
    with pytest.raises(RowInputError, match="unknown format"):
        image_part(b"hello")


def test_a_missing_value_is_no_image(png: Path) -> None:
    assert image_parts(None) == image_parts("") == image_parts(float("nan")) == image_parts([]) == []
    assert len(image_parts([png, None, "https://example.com/a.png"])) == 2


def test_inline_images_reads_files_only_when_sending_and_copies(png: Path) -> None:
    part = image_part(png)
    chat: Chat = [{"role": "user", "content": [part, {"type": "text", "text": "What colour?"}]}]
    sent = inline_images(chat)
    assert sent[0]["content"][0] == {  # type: ignore[index]
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64," + base64.b64encode(tiny_png()).decode()},
    }
    assert chat[0]["content"][0] == part  # type: ignore[index]  # the chat the row keeps is not changed
    text_only: Chat = [{"role": "user", "content": "hi"}]
    assert inline_images(text_only) is text_only


def test_a_file_changed_after_formatting_is_not_sent_under_the_old_digest(tmp_path: Path) -> None:
    path = tmp_path / "changing.png"
    path.write_bytes(tiny_png((1, 2, 3)))
    url = image_part(path)["image_url"]["url"]
    path.write_bytes(tiny_png((4, 5, 6)))
    with pytest.raises(BadRequestError, match="changed after its row was formatted"):
        image_data(url)


def test_text_generation_puts_images_before_the_text(png: Path) -> None:
    task = TextGeneration(llm=SeeingLLM(replies=["red"]), system_prompt="Be brief.")
    [row] = processed(task, [{"instruction": "What colour?", "image": [png, "https://example.com/b.png"]}])
    assert row["generation"] == "red"
    chat = row["distilabel_metadata"]["raw_input_text-generation"]
    assert chat == [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                image_part(png),
                {"type": "image_url", "image_url": {"url": "https://example.com/b.png"}},
                {"type": "text", "text": "What colour?"},
            ],
        },
    ]
    assert "base64" not in repr(row)  # the row names the file; the bytes go only in the request


def test_rows_without_an_image_are_exactly_as_before(png: Path) -> None:
    task = TextGeneration(llm=SeeingLLM(replies=["a"]))
    rows = processed(task, [{"instruction": "x"}, {"instruction": "y", "image": None}])
    assert [r["distilabel_metadata"]["raw_input_text-generation"] for r in rows] == [
        [{"role": "user", "content": "x"}],
        [{"role": "user", "content": "y"}],
    ]
    assert "image" in task.inputs and task.inputs["image"] is False  # type: ignore[index,call-overload]


def test_a_missing_image_fails_its_row_only(png: Path, tmp_path: Path) -> None:
    llm = SeeingLLM(replies=["seen"])
    task = TextGeneration(llm=llm)
    rows = processed(
        task,
        [
            {"instruction": "a", "image": png},
            {"instruction": "b", "image": tmp_path / "gone.jpg"},
            {"instruction": "c"},
        ],
    )
    assert [r["generation"] for r in rows] == ["seen", None, "seen"]
    error = rows[1]["distilabel_metadata"]["error_text-generation"]
    assert error.startswith("RowInputError: image file not found") and "gone.jpg" in error
    assert len(llm.calls) == 2  # the row with the missing file was not asked


def test_an_llm_that_reads_no_images_fails_those_rows_naming_the_model(png: Path) -> None:
    llm = ScriptedLLM(model="text-only-model", replies=["ok"])
    rows = processed(TextGeneration(llm=llm), [{"instruction": "a", "image": png}, {"instruction": "b"}])
    assert [r["generation"] for r in rows] == [None, "ok"]
    error = rows[0]["distilabel_metadata"]["error_text-generation"]
    assert error.startswith("BadRequestError: ScriptedLLM (text-only-model) reads no images")
    assert [c["input"] for c in llm.calls] == [[{"role": "user", "content": "b"}]]
    with pytest.raises(BadRequestError, match="reads no images"):  # a provider's own guard, for calls by hand
        chat_messages(rows[0]["distilabel_metadata"]["raw_input_text-generation"], llm)


def test_the_cache_key_changes_with_the_files_bytes(tmp_path: Path) -> None:
    path = tmp_path / "photo.png"
    task = TextGeneration(llm=SeeingLLM())

    def key() -> str:
        [chat] = task.format_inputs([{"instruction": "Describe it.", "image": path}])
        return generation_key("identity", chat, {}, 0)

    path.write_bytes(tiny_png((0, 0, 0)))
    first = key()
    assert key() == first
    path.write_bytes(tiny_png((9, 9, 9)))
    assert key() != first


def test_the_token_estimate_and_the_budget_count_images(png: Path) -> None:
    text: Chat = [{"role": "user", "content": "What colour?"}]
    with_image: Chat = [{"role": "user", "content": [image_part(png), {"type": "text", "text": "What colour?"}]}]
    assert has_images(with_image) and not has_images(text) and not has_images("raw text")
    assert estimate_tokens(with_image, None) - estimate_tokens(text, None) == IMAGE_TOKENS
    budget = Budget(budget_usd=1.0)
    price = Price(input=1.0, output=1.0)
    more: Any = budget.estimate(price, with_image, 1, 10, batch=False)
    assert more > budget.estimate(price, text, 1, 10, batch=False)


def test_chat_generation_gives_a_local_image_in_its_messages_a_digest(tmp_path: Path) -> None:
    from taskloom import get_task

    picture = tmp_path / "cat.png"
    picture.write_bytes(tiny_png())
    task = get_task("chat-generation", llm=SeeingLLM(replies=["a cat"]))

    def row(url: str) -> Row:
        parts = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "What is it?"}]
        return {"messages": [{"role": "user", "content": parts}]}

    first = task.format_input(row(str(picture)))
    assert not isinstance(first, str)
    url = first[0]["content"][0]["image_url"]["url"]  # type: ignore[index]
    assert url.startswith(picture.resolve().as_uri()) and "#sha256=" in url
    picture.write_bytes(tiny_png((0, 0, 255)))
    again = task.format_input(row(url))  # the old reference: its digest is made again from the bytes
    assert again[0]["content"][0]["image_url"]["url"] != url  # type: ignore[index]
    web = task.format_input(row("https://example.com/cat.png"))
    assert web[0]["content"][0]["image_url"]["url"] == "https://example.com/cat.png"  # type: ignore[index]
    plain = {"messages": [{"role": "user", "content": "Hi"}]}
    assert task.format_input(plain) is plain["messages"]  # text-only chats are not copied
    task.load()
    [failed] = next(task.process([row(str(tmp_path / "gone.png"))]))
    assert "gone.png" in failed["distilabel_metadata"]["error_chat-generation"]
