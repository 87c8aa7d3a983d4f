"""``format-sft``, ``format-dpo``, ``format-kto``: judged rows as TRL's trainers read them.

A training run should not need a conversion script between the data and the trainer: each
step here writes rows in one of TRL's documented dataset types (language modeling or
prompt-completion for SFT, preference for DPO and ORPO, unpaired preference for KTO), in its
standard form (plain strings) or its conversational form (lists of ``{"role", "content"}``
messages, which TRL renders with the model's own chat template).

The output rows replace the input rows: they hold the format's columns and, only when asked
(``keep_columns``), a few of the row's own. TRL needs nothing else, and a column left over from a
judge (rationales, ``distilabel_metadata``) would be carried into every shard of the dataset.

A row that cannot become a training example (no text, a tie, unreadable scores) is left out and
counted by reason with :meth:`Step.drop`, so the run's summary says how much of the judged data
each rule cost. The steps build plain dicts and validate nothing per row beyond what they read:
they run over every row of a dataset, so they are kept to a few microseconds a row.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from taskloom.plugin import Row, Step, StepColumns, columns_as_dict

Prompt = str | list[dict[str, Any]]
"""A standard prompt (a string) or a conversational one (a list of messages)."""

_SCORE_TYPES = frozenset({int, float})
"""What a score may be; checked with ``type(score) in``, which is quick and leaves out bool (a
True "score" is a column mix-up, not a rating)."""


def _assistant(text: str) -> list[dict[str, Any]]:
    return [{"role": "assistant", "content": text}]


class _TrainingFormat(Step):
    """What the three formats share: where the prompt comes from, its form, and kept columns."""

    runs_in_thread: ClassVar[bool] = False  # a few dicts a row: cheaper than a thread hop

    instruction_column: str = Field(
        default="instruction",
        description="The column with the user's instruction (a string), or a whole chat (a list of messages).",
    )
    system_prompt_column: str | None = Field(
        default="system_prompt",
        description="An optional column with a system prompt to put before the instruction; None to ignore it.",
    )
    conversational: bool = Field(
        default=True,
        description="Messages ({'role', 'content'} lists, rendered by the trainer's chat template) or plain strings.",
    )
    keep_columns: list[str] = Field(
        default_factory=list,
        description="Input columns to carry into the output rows (model_name...); TRL reads none of them.",
    )

    def format_columns(self) -> list[str]:
        """The columns of the format itself, before ``keep_columns``."""
        raise NotImplementedError

    def read_columns(self) -> dict[str, bool]:
        """The columns the format reads besides the instruction and the system prompt."""
        raise NotImplementedError

    @property
    def inputs(self) -> StepColumns:
        columns = {self.instruction_column: True}
        if self.system_prompt_column is not None:
            columns[self.system_prompt_column] = False
        columns.update(self.read_columns())
        columns.update(dict.fromkeys(self.keep_columns, True))
        return columns

    @property
    def outputs(self) -> StepColumns:
        return list(dict.fromkeys([*self.format_columns(), *self.keep_columns]))

    def columns_after(self, available: Sequence[str]) -> list[str]:
        # The row is replaced, not extended: only the format's columns and the kept ones remain,
        # under the names map_outputs gives them (output mappings, then inputs mapped back).
        names = []
        for column in columns_as_dict(self.outputs):
            column = self.output_mappings.get(column, column)
            names.append(self.input_mappings.get(column, column))
        return list(dict.fromkeys(names))

    def load(self) -> None:
        super().load()
        self._dropped.clear()  # counts are per run, also when a step object is run again

    def prompt_of(self, row: Row) -> Prompt | None:
        """The row's prompt in this format's form; None when the row has no instruction."""
        instruction = row.get(self.instruction_column)
        column = self.system_prompt_column
        system = row.get(column) if column is not None else None
        if isinstance(instruction, str):
            if self.conversational:
                if system:
                    return [{"role": "system", "content": system}, {"role": "user", "content": instruction}]
                return [{"role": "user", "content": instruction}]
            # A standard prompt has no place of its own for a system prompt, but the answer was
            # written under it: training on the instruction alone would teach answers to a prompt
            # never given.
            return f"{system}\n\n{instruction}" if system else instruction
        if instruction is None:
            return None
        return self._chat_prompt(instruction)

    def _chat_prompt(self, instruction: Any) -> Prompt:
        if not isinstance(instruction, list):
            raise ValueError(
                f"Step {self.name!r}: column {self.instruction_column!r} must be a string or a list of "
                f"messages, got {type(instruction).__name__}."
            )
        if not self.conversational:
            raise ValueError(
                f"Step {self.name!r}: column {self.instruction_column!r} holds a chat (a list of messages), "
                "which has no standard (plain string) form; set conversational: true."
            )
        return list(instruction)  # a chat is taken as it is, system message included

    def completion_of(self, text: str) -> Any:
        return _assistant(text) if self.conversational else text

    def not_text(self, column: str, value: Any) -> ValueError:
        """The error for an answer that is not a string: a wrong column, not a row to skip."""
        return ValueError(
            f"Step {self.name!r}: column {column!r} must hold strings (or None), got {type(value).__name__}: "
            f"{value!r:.60}. Is it the column with the answers?"
        )

    def kept(self, row: Row) -> Row:
        return {column: row[column] for column in self.keep_columns}

    def kept_per_generation(self, row: Row, count: int) -> list[Row]:
        """Kept columns for each of ``count`` generations: a list aligned with them is split."""
        rows: list[Row] = [{} for _ in range(count)]
        for column in self.keep_columns:
            value = row[column]
            aligned = isinstance(value, list) and len(value) == count
            for index, out in enumerate(rows):
                out[column] = value[index] if aligned else value
        return rows


class FormatSFT(_TrainingFormat):
    """Rows for TRL's ``SFTTrainer``: conversational ``messages``, or ``prompt`` / ``completion``.

    SFT learns from each answer on its own, so a row with several generations (a grouped
    ``generations`` list, read with ``generation_column: generations``) gives one row per
    generation; a generation that is None (it failed) is left out and counted. Put a filter
    before this step to keep only the good ones.

    In ``{"instruction": "What is 2+2?", "generation": "4", "model_name": "m"}``; out, with
    ``style: messages``: ``{"messages": [{"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4"}]}``. With ``style: prompt-completion`` the same turns
    are split into ``prompt`` and ``completion`` (strings when ``conversational: false``), which
    lets the trainer compute the loss on the completion only.
    """

    registry_name = "format-sft"
    example: ClassVar[tuple[Row, Row]] = (
        {"instruction": "What is 2+2?", "generation": "4", "model_name": "m"},
        {"messages": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}]},
    )

    style: Literal["messages", "prompt-completion"] = Field(
        default="messages",
        description="'messages' (one chat per row) or 'prompt-completion' (prompt and completion columns).",
    )
    generation_column: str = Field(
        default="generation",
        description="The column with the answer; a list (grouped generations) gives one row per item.",
    )
    messages_column: str | None = Field(
        default=None,
        description="A column that already holds whole conversations (conversation's messages, magpie's "
        "conversation), read instead of instruction and generation: written as they are, or split before "
        "the last answer for prompt-completion.",
    )

    @model_validator(mode="after")
    def _messages_are_conversational(self) -> FormatSFT:
        if self.style == "messages" and not self.conversational:
            raise ValueError(
                "style 'messages' is conversational by definition; for plain strings use "
                "style: prompt-completion with conversational: false."
            )
        if self.messages_column is not None and not self.conversational:
            raise ValueError("messages_column reads conversations, which are conversational: drop conversational.")
        return self

    @property
    def inputs(self) -> StepColumns:
        if self.messages_column is None:
            return super().inputs
        return {self.messages_column: True, **dict.fromkeys(self.keep_columns, True)}

    def format_columns(self) -> list[str]:
        return ["messages"] if self.style == "messages" else ["prompt", "completion"]

    def read_columns(self) -> dict[str, bool]:
        return {self.generation_column: True}

    def process(self, inputs: list[Row]) -> Iterator[list[Row]]:
        if self.messages_column is not None:
            yield self._conversations(inputs, self.messages_column)
            return
        column = self.generation_column
        as_messages = self.style == "messages"
        keep = bool(self.keep_columns)
        out: list[Row] = []
        for row in inputs:
            prompt = self.prompt_of(row)
            if prompt is None:
                self.drop(row, f"{self.instruction_column} is None")
                continue
            value = row.get(column)
            texts = value if isinstance(value, list) else [value]
            if not texts:
                self.drop(row, f"{column} is empty")
                continue
            extras = self.kept_per_generation(row, len(texts)) if keep else None
            for index, text in enumerate(texts):
                if text is None:
                    self.drop(row, "generation is None")
                    continue
                if not isinstance(text, str):
                    raise self.not_text(column, text)
                if as_messages:
                    assert isinstance(prompt, list)
                    made: Row = {"messages": [*prompt, {"role": "assistant", "content": text}]}
                else:
                    made = {
                        "prompt": list(prompt) if isinstance(prompt, list) else prompt,
                        "completion": self.completion_of(text),
                    }
                if extras is not None:
                    made.update(extras[index])
                out.append(made)
        yield out

    def _conversations(self, inputs: list[Row], column: str) -> list[Row]:
        """Whole conversations, each kept when it ends with an answer (what SFT learns from)."""
        out: list[Row] = []
        keep = self.keep_columns
        for row in inputs:
            messages = row.get(column)
            if messages is None:
                self.drop(row, f"{column} is None")
                continue
            if not (isinstance(messages, list) and all(isinstance(m, dict) and "role" in m for m in messages)):
                raise ValueError(
                    f"Step {self.name!r}: column {column!r} must hold a list of chat messages, got {messages!r:.80}."
                )
            if not messages or messages[-1].get("role") != "assistant":
                self.drop(row, "the conversation does not end with an answer")
                continue
            made: Row = (
                {"messages": list(messages)}
                if self.style == "messages"
                else {"prompt": list(messages[:-1]), "completion": [messages[-1]]}
            )
            for name in keep:
                made[name] = row.get(name)
            out.append(made)
        return out


Pairing = Literal["best-worst", "best-random-lower"]


class FormatDPO(_TrainingFormat):
    """Preference rows, ``prompt`` / ``chosen`` / ``rejected``, for TRL's DPO (and ORPO) trainers.

    The pair comes either from per-generation scores (``pick_by: scores``: ultrafeedback's
    ``ratings`` by default, or a scorer's ``scores`` with ``generations_column: responses``) or
    from a pairwise judge's verdict (``pick_by: verdict``). A pair that teaches nothing, or the
    wrong thing, is left out and counted by reason: fewer than two scored generations, a tie, a
    margin below ``min_margin``, a verdict that changed when the judge saw the answers swapped.

    ``best-worst`` pairs the best answer with the worst, the clearest signal. ``best-random-lower``
    pairs it with any lower one, so the model also sees near misses; the pick is a hash of the
    chosen text and ``seed``, so it does not depend on the order rows arrive in or on batching.

    In ``{"instruction": "What is 2+2?", "generations": ["4", "5", "22"], "ratings": [5, 1, 2]}``;
    out: ``{"prompt": [{"role": "user", "content": "What is 2+2?"}], "chosen": [{"role":
    "assistant", "content": "4"}], "rejected": [{"role": "assistant", "content": "5"}]}``, or
    the three strings ``"What is 2+2?"``, ``"4"``, ``"5"`` when ``conversational: false``.
    """

    registry_name = "format-dpo"
    example: ClassVar[tuple[Row, Row]] = (
        {"instruction": "What is 2+2?", "generations": ["4", "5", "22"], "ratings": [5, 1, 2]},
        {
            "prompt": [{"role": "user", "content": "What is 2+2?"}],
            "chosen": [{"role": "assistant", "content": "4"}],
            "rejected": [{"role": "assistant", "content": "5"}],
        },
    )

    pick_by: Literal["scores", "verdict"] = Field(
        default="scores",
        description="Choose the pair from per-generation scores, or from a pairwise judge's verdict.",
    )
    generations_column: str = Field(default="generations", description="The list of answers.")
    scores_column: str = Field(
        default="ratings",
        description="The scores aligned with the answers: 'ratings' (ultrafeedback), 'scores' (quality-scorer).",
    )
    pairing: Pairing = Field(
        default="best-worst",
        description="'best-worst', or 'best-random-lower': the best against a lower one picked by seed.",
    )
    min_margin: float = Field(
        default=0, ge=0, description="The least score difference between chosen and rejected (ties never pass)."
    )
    seed: int = Field(default=0, description="Which lower answer 'best-random-lower' picks, reproducibly.")
    verdict_column: str = Field(default="verdict", description="The pairwise verdict: 'A', 'B' or 'tie'.")
    agreement_column: str = Field(
        default="orders_agree",
        description="Whether both orders gave the same verdict (None when only one order was asked).",
    )
    add_scores: bool = Field(
        default=False,
        description="Also write score_chosen and score_rejected (extra columns; TRL's DPO trainer ignores them).",
    )

    @model_validator(mode="after")
    def _scores_need_scores(self) -> FormatDPO:
        if self.add_scores and self.pick_by != "scores":
            raise ValueError("add_scores needs pick_by: scores; a verdict has no scores to write.")
        return self

    def format_columns(self) -> list[str]:
        columns = ["prompt", "chosen", "rejected"]
        return [*columns, "score_chosen", "score_rejected"] if self.add_scores else columns

    def read_columns(self) -> dict[str, bool]:
        if self.pick_by == "verdict":
            return {self.generations_column: True, self.verdict_column: True, self.agreement_column: False}
        return {self.generations_column: True, self.scores_column: True}

    def process(self, inputs: list[Row]) -> Iterator[list[Row]]:
        pick = self._pick_by_verdict if self.pick_by == "verdict" else self._pick_by_scores
        add_scores = self.add_scores
        out: list[Row] = []
        for row in inputs:
            picked = pick(row)
            if isinstance(picked, str):
                self.drop(row, picked)
                continue
            chosen, rejected, score_chosen, score_rejected = picked
            prompt = self.prompt_of(row)
            if prompt is None:
                self.drop(row, f"{self.instruction_column} is None")
                continue
            made: Row = {
                "prompt": prompt,
                "chosen": self.completion_of(chosen),
                "rejected": self.completion_of(rejected),
            }
            if add_scores:
                made["score_chosen"] = score_chosen
                made["score_rejected"] = score_rejected
            if self.keep_columns:
                made.update(self.kept(row))
            out.append(made)
        yield out

    def _pick_by_scores(self, row: Row) -> tuple[str, str, Any, Any] | str:
        """The chosen and rejected texts with their scores, or why the row gives no pair."""
        texts = row.get(self.generations_column)
        scores = row.get(self.scores_column)
        if scores is None:
            return f"{self.scores_column} is None"
        if not isinstance(texts, list) or not isinstance(scores, list) or len(texts) != len(scores):
            return f"{self.scores_column} is not aligned with {self.generations_column}"
        best = worst = ""
        best_score: Any = None
        worst_score: Any = None
        candidates = 0
        scored: list[tuple[Any, str]] | None = [] if self.pairing == "best-random-lower" else None
        for text, score in zip(texts, scores, strict=True):
            if text is None or type(score) not in _SCORE_TYPES:
                continue  # an unreadable score, or an answer that failed: not a candidate
            if not isinstance(text, str):
                raise self.not_text(self.generations_column, text)
            candidates += 1
            if scored is not None:
                scored.append((score, text))
            if candidates == 1:
                best, best_score, worst, worst_score = text, score, text, score
            elif score > best_score:
                best, best_score = text, score
            elif score < worst_score:
                worst, worst_score = text, score
        if candidates < 2:
            return "fewer than two scored generations"
        if best_score == worst_score:
            return "tie"
        if scored is None:  # best-worst
            if best_score - worst_score < self.min_margin:
                return "margin below min_margin"
            return best, worst, best_score, worst_score
        least = best_score - self.min_margin
        lower = [(score, text) for score, text in scored if score < best_score and score <= least]
        if not lower:
            return "margin below min_margin"
        # crc32 is stable across processes (str hashes are salted), and cheap on a short text.
        index = zlib.crc32(best.encode("utf-8"), self.seed & 0xFFFFFFFF) % len(lower)
        score, text = lower[index]
        return best, text, best_score, score

    def _pick_by_verdict(self, row: Row) -> tuple[str, str, Any, Any] | str:
        """The pair a pairwise verdict prefers, or why the row gives no pair."""
        # A judge that saw both orders and changed its mind reports "tie": say why, not "tie".
        if row.get(self.agreement_column) is False:
            return "orders disagree"
        verdict = row.get(self.verdict_column)
        if verdict is None:
            return f"{self.verdict_column} is None"
        if verdict == "tie":
            return "tie"
        pair = row.get(self.generations_column)
        if not isinstance(pair, list) or len(pair) != 2:
            return f"{self.generations_column} is not a pair"
        first, second = pair
        if first is None or second is None:
            return "generation is None"
        for text in pair:
            if not isinstance(text, str):
                raise self.not_text(self.generations_column, text)
        if verdict == "A":
            return first, second, None, None
        if verdict == "B":
            return second, first, None, None
        return f"unknown verdict {verdict!r}"


class FormatKTO(_TrainingFormat):
    """Unpaired preference rows, ``prompt`` / ``completion`` / ``label``, for TRL's KTO trainer.

    KTO needs no pairs, only whether each answer is desirable, so every scored generation gives
    a row: ``label`` is True when its score is at least ``threshold``. The scale depends on the
    judge (1 to 5 for ultrafeedback, 1 to 6 for quality-scorer), so ``threshold`` has no default.
    With ``false_below``, only scores under it are False and those in between are left out: an
    answer the judge found middling is neither a good nor a bad example.

    A single ``generation`` with a single score (``generations_column: generation``,
    ``scores_column: score``) gives one row the same way.

    In ``{"instruction": "What is 2+2?", "generations": ["4", "5"], "ratings": [5, 1]}`` with
    ``threshold: 4``; out: ``{"prompt": [{"role": "user", "content": "What is 2+2?"}],
    "completion": [{"role": "assistant", "content": "4"}], "label": True}`` and the same with
    ``"5"`` and ``False``.
    """

    registry_name = "format-kto"
    example: ClassVar[tuple[Row, Row]] = (
        {"instruction": "What is 2+2?", "generations": ["4"], "ratings": [5]},
        {
            "prompt": [{"role": "user", "content": "What is 2+2?"}],
            "completion": [{"role": "assistant", "content": "4"}],
            "label": True,
        },
    )

    threshold: float = Field(description="A score at least this high is desirable (label True).")
    false_below: float | None = Field(
        default=None,
        description="If set, only scores below it are undesirable; those between it and threshold are left out.",
    )
    generations_column: str = Field(default="generations", description="The answers (a list, or one string).")
    scores_column: str = Field(default="ratings", description="Their scores (a list aligned with them, or one).")

    @model_validator(mode="after")
    def _gap_below_threshold(self) -> FormatKTO:
        if self.false_below is not None and self.false_below > self.threshold:
            raise ValueError(f"false_below ({self.false_below}) must not be above threshold ({self.threshold}).")
        return self

    def format_columns(self) -> list[str]:
        return ["prompt", "completion", "label"]

    def read_columns(self) -> dict[str, bool]:
        return {self.generations_column: True, self.scores_column: True}

    def process(self, inputs: list[Row]) -> Iterator[list[Row]]:
        threshold = self.threshold
        false_below = threshold if self.false_below is None else self.false_below
        texts_column, scores_column = self.generations_column, self.scores_column
        keep = bool(self.keep_columns)
        out: list[Row] = []
        for row in inputs:
            texts, scores = row.get(texts_column), row.get(scores_column)
            if scores is None:
                self.drop(row, f"{scores_column} is None")
                continue
            if not isinstance(texts, list):  # one generation and its score
                texts = [texts]
                if not isinstance(scores, list):
                    scores = [scores]
            if not isinstance(scores, list) or len(scores) != len(texts):
                self.drop(row, f"{scores_column} is not aligned with {texts_column}")
                continue
            if not texts:
                self.drop(row, f"{texts_column} is empty")
                continue
            prompt = self.prompt_of(row)
            if prompt is None:
                self.drop(row, f"{self.instruction_column} is None")
                continue
            extras = self.kept_per_generation(row, len(texts)) if keep else None
            for index, (text, score) in enumerate(zip(texts, scores, strict=True)):
                if text is None:
                    self.drop(row, "generation is None")
                    continue
                if not isinstance(text, str):
                    raise self.not_text(texts_column, text)
                if type(score) not in _SCORE_TYPES:
                    self.drop(row, "score is None" if score is None else "score is not a number")
                    continue
                if score >= threshold:
                    label = True
                elif score < false_below:
                    label = False
                else:
                    self.drop(row, "score between false_below and threshold")
                    continue
                made: Row = {
                    "prompt": list(prompt) if isinstance(prompt, list) else prompt,
                    "completion": self.completion_of(text),
                    "label": label,
                }
                if extras is not None:
                    made.update(extras[index])
                out.append(made)
        yield out


__all__ = ["FormatDPO", "FormatKTO", "FormatSFT"]
