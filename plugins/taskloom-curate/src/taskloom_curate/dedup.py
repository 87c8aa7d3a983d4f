"""The ``deduplicate`` step: leave out rows whose text repeats an earlier row's, exactly or nearly.

    - name: dedup
      type: deduplicate
      columns: [instruction, generation]
      method: minhash                    # or exact
      threshold: 0.8                     # estimated Jaccard similarity of word 3-grams
      duplicates_to: out/duplicates.jsonl

Generated data repeats itself: a model asked a thousand times for a question on a topic writes
the same question with a few words changed, and training on those copies weights them as if
they were many examples. ``exact`` catches the copies that differ only in case, spacing,
punctuation or Unicode form; ``minhash`` also catches the ones that differ by a few words.

The step is streaming: it keeps what identifies each kept row (a 16-byte digest, or a MinHash
signature and the LSH index's band keys), never the rows, so its memory grows with the number of
distinct rows but not with their length: about 0.1 KB a kept row for ``exact``, about 3.6 KB for
``minhash`` at the defaults (most of it datasketch's index: a dict entry and a set for each band).

It asks the pipeline for rows in source order (``needs_input_order``), since "keep the first
occurrence" must mean the first in the input, not the first whose upstream LLM call happened to
return first; a rerun then keeps the same rows.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import sys
import unicodedata
import zlib
from array import array
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, Literal

from pydantic import Field, PrivateAttr, field_validator

from taskloom.plugin import Row, Step, StepColumns
from taskloom_curate.sidefile import SideFile
from taskloom_curate.upstream import UpstreamColumnError, absent, columns_from_upstream

COLUMN_BREAK = " \ue000 "
"""Between the values of two columns (and, ``LIST_BREAK``, two items of a list value).

A private-use character, which the normalisation keeps and which splits into a word of its own,
so ``{"a": "x y", "b": "z"}`` and ``{"a": "x", "b": "y z"}`` are different texts: a shingle that
spans the boundary says where the boundary was.
"""
LIST_BREAK = " \ue001 "


class DeduplicateColumnError(UpstreamColumnError):
    """A deduplication compares a column that no step before it makes."""


@functools.cache
def _punctuation_table() -> dict[int, str]:
    """Every Unicode punctuation character (categories P*) mapped to a space, for ``str.translate``.

    Built once, on first use (a fifth of a second: every code point is looked at), rather than at
    import, so listing the registered steps costs nothing. ``str.translate`` with it is ten times
    faster than a regular expression over the same characters.
    """
    return {code: " " for code in range(sys.maxunicode + 1) if unicodedata.category(chr(code)).startswith("P")}


def normalise(text: str) -> str:
    """The text as the comparison sees it: NFKC, case-folded, punctuation to spaces, spaces collapsed.

    Each part removes a difference that copies of one text often have and that never changes what
    it says: NFKC folds compatibility forms (full-width letters, ligatures, non-breaking spaces);
    case folding is the Unicode lower-casing meant for comparisons (``"Straße"`` and ``"STRASSE"``
    meet); punctuation (Unicode categories P*: quotes of any style, dashes, a trailing full stop)
    becomes a space rather than nothing, so ``"end.Next"`` splits into two words like
    ``"end. Next"``; and any run of whitespace becomes one space. Symbols (``$``, ``+``, emoji) and
    combining marks are kept: marks are parts of letters in many scripts (Devanagari vowel signs),
    and a symbol can be the whole difference (``2 < 3`` against ``2 > 3``).
    """
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(folded.translate(_punctuation_table()).split())


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple):
        return LIST_BREAK.join(_as_text(item) for item in value)
    # Numbers, booleans, dicts: JSON with sorted keys, so equal values read alike.
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


class _Exact:
    """Kept texts by digest: 16 bytes of BLAKE2b a row, since a collision at that size never happens."""

    def __init__(self) -> None:
        self.first: dict[bytes, int] = {}

    def check(self, text: str, position: int) -> tuple[int, float] | None:
        digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
        earlier = self.first.setdefault(digest, position)
        return None if earlier == position else (earlier, 1.0)


def _band_key(band: bytes) -> bytes:
    """A band's key in the LSH index: 4 bytes instead of the band's 52 (13 values at the defaults).

    The index holds one key a band a kept row, so this is a ninth of the step's memory at the
    defaults (about 40 MB in 100,000 kept rows). Two bands that differ but share a key make a
    spurious candidate, about once in 5,000 rows at 100,000 kept rows; the similarity check
    after the lookup drops it, as it drops LSH's own false positives.
    """
    return zlib.crc32(band).to_bytes(4, "little")


class _MinHashes:
    """Signatures of the kept rows, and datasketch's LSH index over them.

    The signatures are rows of numpy blocks (``BLOCK`` signatures each) rather than a
    ``LeanMinHash`` each: 512 bytes a kept row at 128 permutations instead of that plus an object,
    and no copying or spare room as they grow, as one array grown by doubling would have. A
    candidate's similarity is the fraction of equal slots, which is what ``MinHash.jaccard``
    computes. Index keys are kept-row numbers, small ints.

    Shingles are hashed with CRC-32, not datasketch's default SHA-1: MinHash needs a hash that
    spreads shingles evenly, not one that resists attack, datasketch's permutation scheme mixes the
    hash with MurmurHash3's finaliser before permuting, and with SHA-1 a row took 1.6 times as long
    (estimates were as close to the true similarity with either, over planted pairs).
    """

    BLOCK: ClassVar[int] = 4096

    def __init__(self, threshold: float, shingle_size: int, unit: str, num_perm: int, seed: int) -> None:
        import numpy as np
        from datasketch import MinHash, MinHashLSH  # type: ignore[import-untyped]

        self.np = np
        # One MinHash, cleared for each row: a new one per row would generate its permutations
        # again (as long as the rest of the row's work) or, handed them, check them again.
        self.signature = MinHash(num_perm=num_perm, seed=seed, hashfunc=zlib.crc32)
        self.num_perm = num_perm
        # The least number of equal slots that is an estimate >= threshold, as an int comparison.
        self.least_equal = math.ceil(threshold * num_perm - 1e-9)
        self.shingle_size = shingle_size
        self.words = unit == "words"
        try:
            self.index = MinHashLSH(threshold=threshold, num_perm=num_perm, hashfunc=_band_key)
        except ValueError:
            # datasketch's optimiser picks a single band for a high threshold over few permutations
            # (0.95 over 16), and then refuses it. Two bands find every pair one band would (and
            # more); the threshold check after the lookup removes the extra ones.
            self.index = MinHashLSH(num_perm=num_perm, params=(2, num_perm // 2), hashfunc=_band_key)
        self.blocks: list[Any] = []
        self.positions = array("q")
        """Each kept row's position in the input, by kept-row number (8 bytes each, not an int object)."""

    def shingles(self, text: str) -> set[bytes]:
        """The text's set of n-grams: of words by default.

        Words, because a near-duplicate in generated text is the same text with some words changed,
        added or left out, and each changed word changes exactly ``shingle_size`` word shingles, so
        the similarity reads as "how much of the wording is shared"; and a 200-word paragraph has
        about 200 word shingles against about 1,200 character ones, six times fewer to hash.
        Characters are for text written without spaces (Chinese, Japanese, Thai), where a "word"
        would be a whole sentence; five or so characters a shingle suits them. A text shorter than
        one shingle is one shingle, so two short texts still compare.
        """
        size = self.shingle_size
        if self.words:
            words = text.encode().split(b" ")  # normalised: single spaces only
            if len(words) <= size:
                return {b" ".join(words)}
            return set(map(b" ".join, zip(*(words[i:] for i in range(size)), strict=False)))
        if len(text) <= size:
            return {text.encode()}
        return {text[i : i + size].encode() for i in range(len(text) - size + 1)}

    def check(self, text: str, position: int) -> tuple[int, float] | None:
        signature = self.signature
        signature.clear()
        signature.update_batch(self.shingles(text))
        hashvalues = signature.hashvalues
        candidates = self.index.query(signature)
        if candidates:
            blocks, size, count_nonzero = self.blocks, self.BLOCK, self.np.count_nonzero
            for kept in sorted(candidates):  # kept-row numbers: the first kept row that matches wins
                equal = int(count_nonzero(blocks[kept // size][kept % size] == hashvalues))
                if equal >= self.least_equal:
                    return self.positions[kept], equal / self.num_perm
        number = len(self.positions)
        if number % self.BLOCK == 0:
            self.blocks.append(self.np.empty((self.BLOCK, self.num_perm), dtype=hashvalues.dtype))
        self.blocks[-1][number % self.BLOCK] = hashvalues
        self.positions.append(position)
        self.index.insert(number, signature, check_duplication=False)
        return None


class Deduplicate(Step):
    """Keep the first row of each group of rows whose text is the same, or nearly; drop the others.

    The text of a row is its ``columns``' values joined (a list value's items too), normalised
    (:func:`normalise`). With ``method: exact``, rows whose normalised texts are equal are
    duplicates. With ``method: minhash`` (the default), a row is a duplicate of the first kept row
    whose estimated Jaccard similarity to it is at least ``threshold``, the similarity of their
    sets of word (or character) ``shingle_size``-grams, estimated with MinHash signatures of ``num_perm``
    permutations and found through an LSH index (``datasketch``); each candidate the index finds is
    checked against the threshold, since LSH also returns some rows below it. Rows pass unchanged.

    Near the threshold both parts are approximate: at 128 permutations an estimate is within
    about 0.035 of the true similarity two times in three, and the index, whose bands datasketch
    sets to balance its misses against its false candidates (9 bands of 13 at 0.8), finds a pair of
    true similarity 0.85 about 7 times in 10, 0.9 about 93 in 100, 0.95 nearly always. Raise
    ``num_perm`` for closer estimates; lower ``threshold`` to catch more of the pairs just above it.

    In, with ``columns: text`` and the defaults::

        {"id": 1, "text": "The Rhine flows from the Swiss Alps through Germany to the North Sea."}
        {"id": 2, "text": "the Rhine flows from the Swiss Alps through Germany to the North Sea"}
        {"id": 3, "text": "The Danube flows from the Black Forest to the Black Sea."}
        {"id": 4, "text": None}

    Out: rows 1 and 3. Row 2 is counted as ``duplicate of an earlier row`` (its case and full stop
    are normalised away: similarity 1.0), row 4 as ``text is None``; with ``duplicates_to`` both
    are written there, row 2 with ``"position": 1, "duplicate_of": 0, "similarity": 1.0``.

    A row whose column is missing or None is dropped with that reason, as ``filter`` drops it:
    a row whose text could not be made (a failed generation) is not a distinct example, and
    keeping it would let every failed row through.
    """

    registry_name = "deduplicate"
    needs_input_order: ClassVar[bool] = True
    needs_all_rows: ClassVar[bool] = True  # one copy must see every row: a shard sees only its own
    # runs_in_thread stays True: hashing a row's shingles is CPU work the event loop must not wait on.

    columns: list[str] | str = Field(
        description="The column (or columns) whose values, joined, are compared; a list value is joined too."
    )
    method: Literal["exact", "minhash"] = Field(
        default="minhash",
        description="exact: equal normalised text; minhash: estimated Jaccard similarity >= threshold.",
    )
    threshold: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description="minhash: the Jaccard similarity of shingle sets from which a row is a duplicate.",
    )
    shingle_size: int = Field(
        default=3, ge=1, le=64, description="minhash: words (or characters) per shingle, the compared unit."
    )
    shingle_unit: Literal["words", "characters"] = Field(
        default="words",
        description="minhash: shingles of words, or of characters for text written without spaces (CJK).",
    )
    # At most 1024: datasketch searches its band layout at load in time that grows faster than
    # num_perm (a third of a second at 1024), and estimates are within 0.0125 by then.
    num_perm: int = Field(
        default=128,
        ge=2,
        le=1024,
        description="minhash: permutations per signature; more estimate the similarity closer, at more CPU.",
    )
    seed: int = Field(
        default=1, ge=0, lt=2**32, description="minhash: picks the permutations; the same seed keeps the same rows."
    )
    duplicates_to: str | None = Field(
        default=None,
        description="A JSON Lines file for every dropped row, with the row it duplicated (relative to the run).",
    )

    _run: _Run | None = PrivateAttr(default=None)

    @field_validator("columns")
    @classmethod
    def _named(cls, value: list[str] | str) -> list[str] | str:
        names = [value] if isinstance(value, str) else value
        if not names:
            raise ValueError("name at least one column to compare.")
        if any(not name for name in names):
            raise ValueError("a column name cannot be empty.")
        doubled = sorted({name for name in names if names.count(name) > 1})
        if doubled:
            raise ValueError(f"the columns {doubled} are named twice; name each once.")
        return value

    @property
    def column_names(self) -> list[str]:
        return [self.columns] if isinstance(self.columns, str) else list(self.columns)

    @property
    def inputs(self) -> StepColumns:
        # Optional: a row without one is dropped with that reason (a pipeline none of whose steps
        # makes one is refused by columns_after, before any row flows).
        return dict.fromkeys(self.column_names, False)

    def columns_after(self, available: Sequence[str]) -> list[str]:
        wanted = [self.input_mappings.get(column, column) for column in self.column_names]
        return columns_from_upstream(self.name, "it compares", wanted, available, DeduplicateColumnError)

    def load(self) -> None:
        self.unload()  # loaded twice: the last run's side file is closed, its index let go
        self._dropped.clear()
        _punctuation_table()  # built here, not on the first row
        if self.method == "exact":
            comparer: _Exact | _MinHashes = _Exact()
            reason = "exact duplicate of an earlier row"
        else:
            comparer = _MinHashes(self.threshold, self.shingle_size, self.shingle_unit, self.num_perm, self.seed)
            reason = "duplicate of an earlier row"
        side = None
        if self.duplicates_to:
            side = SideFile(self.duplicates_to)
            side.open()
        self._run = _Run(comparer, side, self.column_names, reason)

    def unload(self) -> None:
        run, self._run = self._run, None  # the index is the step's whole memory: let it go with the run
        if run is not None and run.side is not None:
            run.side.close()

    def drop(self, row: Row, reason: str) -> None:
        super().drop(row, reason)
        run = self._run
        if run is not None and run.side is not None:
            of, similarity = run.match if run.match is not None else (None, None)
            record = {"reason": reason, "position": run.seen, "duplicate_of": of, "similarity": similarity}
            run.side.write({**record, "row": row})

    def process(self, inputs: list[Row]) -> Iterator[list[Row]]:
        run = self._run
        if run is None:  # standalone, without load(): start as a pipeline would
            self.load()
            run = self._run
            assert run is not None
        check, columns, kept = run.comparer.check, run.columns, []
        for row in inputs:
            missing = absent(row, columns)
            if missing is not None:
                self.drop(row, missing)
            else:
                text = normalise(COLUMN_BREAK.join([_as_text(row[column]) for column in columns]))
                run.match = check(text, run.seen)
                if run.match is None:
                    kept.append(row)
                else:  # through drop(), as every left-out row goes, with the match for the side file
                    self.drop(row, run.reason)
                    run.match = None
            run.seen += 1
        yield kept


class _Run:
    """One run's state, from ``load()`` to ``unload()``, in one plain object.

    A pydantic model's private attributes are read through its ``__getattr__``, about 2 µs each:
    the four reads a row made took more time than the step's own work on a short text. This one is
    read once a call.
    """

    __slots__ = ("columns", "comparer", "match", "reason", "seen", "side")

    def __init__(self, comparer: _Exact | _MinHashes, side: SideFile | None, columns: list[str], reason: str) -> None:
        self.comparer = comparer
        self.side = side
        self.columns = columns
        self.reason = reason
        self.seen = 0
        """Rows seen so far: the position of the row at hand in the step's input."""
        self.match: tuple[int, float] | None = None
        """The row at hand's earlier row (its position, the similarity), while it is being dropped."""


__all__ = ["COLUMN_BREAK", "LIST_BREAK", "Deduplicate", "DeduplicateColumnError", "normalise"]
