"""The one error the sampler raises on purpose, so a caller can catch exactly "this sampler is wrong"."""

from __future__ import annotations

from taskloom.plugin import SourceError


class SamplerError(SourceError):
    """A sampler that cannot make rows: a bad column, a file that cannot be read, a constraint that never holds.

    A :class:`~taskloom.plugin.SourceError` (so a ``TaskloomError`` and a ``ValueError``): code
    that handles a bad source in general handles this one too. The message names the column or
    constraint at fault, what is wrong and what would be accepted.
    """
