"""``text-classification``: labels from a given set, with an explanation; single or multi-label."""

from __future__ import annotations

import re
from typing import Any, ClassVar

from pydantic import Field, model_validator

from taskloom.plugin import Row, StepColumns
from taskloom_tasks.base import PromptedTask
from taskloom_tasks.parsing import field_text, match_label, mentioned_labels

_LABEL_LINE = re.compile(r"^[\s*#_]*(?:labels?|category|categories|class)[*_\s]*:[*_\s]*", re.IGNORECASE)


class TextClassification(PromptedTask):
    """Label ``text`` with one (or, with ``multi_label``, several) of ``labels``, and say why.

    ``labels`` is a list of names, or a mapping from name to a short description shown to the
    model. The ``labels`` column is the chosen label (a string) or, with ``multi_label``, a
    list of them in the given order; anything outside the set is rejected, so the raw text is
    kept instead of a made-up label.

    """

    example: ClassVar[tuple[Row, Row] | None] = (
        {"text": "The battery died after a day."},
        {"labels": "negative", "explanation": "It reports a defect."},
    )
    registry_name: ClassVar[str | None] = "text-classification"
    template_name: ClassVar[str] = "text-classification"

    labels: list[str] | dict[str, str] = Field(description="The allowed labels, or label -> description.")
    multi_label: bool = Field(default=False, description="Allow several labels per text.")
    context: str | None = Field(
        default=None, description="What the texts are and what the labels mean, in a sentence or two."
    )

    @model_validator(mode="after")
    def _check_labels(self) -> TextClassification:
        names = self.label_names()
        if len(names) < 2:
            raise ValueError("give at least two labels.")
        if len({n.lower() for n in names}) != len(names):
            raise ValueError(f"labels must differ other than by case: {names}")
        return self

    def label_names(self) -> list[str]:
        return list(self.labels)

    @property
    def inputs(self) -> StepColumns:
        return ["text"]

    @property
    def outputs(self) -> StepColumns:
        return ["labels", "explanation", "model_name"]

    def template_variables(self) -> list[str]:
        return ["json", "text", "labels", "multi_label", "context"]

    def described_labels(self) -> list[tuple[str, str | None]]:
        if isinstance(self.labels, dict):
            return list(self.labels.items())
        return [(label, None) for label in self.labels]

    def template_context(self, input: Row) -> dict[str, Any]:
        return {
            "text": input["text"],
            "labels": self.described_labels(),
            "multi_label": self.multi_label,
            "context": self.context,
        }

    def response_schema(self) -> dict[str, Any]:
        labels: dict[str, Any] = {
            "type": "array",
            "items": {"type": "string", "enum": self.label_names()},
            "minItems": 1,
        }
        if not self.multi_label:
            labels["maxItems"] = 1
        return {
            "type": "object",
            "properties": {"explanation": {"type": "string", "maxLength": 400}, "labels": labels},
            "required": ["explanation", "labels"],
        }

    def _result(self, chosen: list[str], explanation: Any) -> dict[str, Any]:
        names = self.label_names()
        picked = list(dict.fromkeys(chosen))
        if not picked:
            raise ValueError(f"the reply names none of the labels {names}")
        if not self.multi_label and len(picked) > 1:
            raise ValueError(f"the reply names several labels {picked}, but one was asked for")
        ordered = [n for n in names if n in picked]
        return {
            "labels": ordered if self.multi_label else ordered[0],
            "explanation": str(explanation).strip() if explanation is not None else None,
        }

    def from_json(self, data: Any, input: Row) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise ValueError("the JSON is not an object")
        raw = data.get("labels", data.get("label"))
        values = raw if isinstance(raw, list) else [raw] if isinstance(raw, str) else None
        if values is None:
            raise ValueError("no 'labels' in the JSON")
        chosen = []
        for value in values:
            label = match_label(str(value), self.label_names())
            if label is None:
                raise ValueError(f"{value!r} is not one of the labels {self.label_names()}")
            chosen.append(label)
        return self._result(chosen, data.get("explanation", data.get("reason")))

    def from_text(self, text: str, input: Row) -> dict[str, Any]:
        names = self.label_names()
        lines = text.strip().splitlines()
        marked = [i for i, line in enumerate(lines) if _LABEL_LINE.match(line)]
        index = marked[-1] if marked else len(lines) - 1
        said = _LABEL_LINE.sub("", lines[index]) if lines else ""
        parts = [p for p in re.split(r"[,;/|]|\band\b", said) if p.strip()]
        chosen = [label for p in parts if (label := match_label(p, names)) is not None]
        if len(chosen) != len(parts):  # "Label: negative, since it complains" and the like
            chosen = mentioned_labels(said, names)
        explanation = field_text(text, "explanation", "reason", "reasoning") or "\n".join(lines[:index]).strip() or None
        return self._result(chosen, explanation)
