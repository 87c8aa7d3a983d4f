"""What a run costs: a price table per model, and the dollars of a request.

A user must know what a run costs before and while it runs, and must never be shown a made-up
figure. So a price is looked up by the ``model_name`` the LLM reports, in this order: the
pipeline file's ``prices``, the config file's ``[prices]``, then a small table shipped here that
states the date it was compiled. A model found nowhere has *no price*: its tokens are counted and
shown, its dollars are not guessed.

Prices are dollars per million tokens, as the providers publish them::

    prices:
      gpt-4o-mini: {input: 0.15, output: 0.60, cached_input: 0.075}
      my-finetune: {input: 0.30, output: 1.20, batch_discount: 0.5}

A dated snapshot (``gpt-4o-mini-2024-07-18``, ``claude-haiku-4-5-20251001``) or ``-latest``
alias finds the price of its base name when it has none of its own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from taskloom.errors import TaskloomError

if TYPE_CHECKING:
    from taskloom.llms.base import LLM

PRICES_DATE = "2026-06"
"""When the shipped table was compiled from OpenAI's and Anthropic's published prices."""

_SNAPSHOT = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8}|latest)$")


class PriceError(TaskloomError, ValueError):
    """A price table that cannot be used: an unknown field, a negative price, not a mapping."""


class Price(BaseModel):
    """One model's prices, in dollars per million tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: float = Field(ge=0, description="Dollars per million prompt tokens.")
    output: float = Field(ge=0, description="Dollars per million generated tokens.")
    cached_input: float | None = Field(
        default=None, ge=0, description="Dollars per million prompt tokens read from the provider's cache; None: input."
    )
    batch_discount: float = Field(
        default=0.5, ge=0, lt=1, description="Fraction taken off in the provider's batch mode (0.5: half price)."
    )

    def cost(self, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0, batch: bool = False) -> float:
        """Dollars for one request's tokens; ``input_tokens`` include the cached ones, as the APIs report them."""
        cached = min(cached_input_tokens, input_tokens)
        cached_rate = self.input if self.cached_input is None else self.cached_input
        dollars = ((input_tokens - cached) * self.input + cached * cached_rate + output_tokens * self.output) / 1e6
        return dollars * (1 - self.batch_discount) if batch else dollars


def _p(input: float, output: float, cached_input: float | None = None) -> Price:
    return Price(input=input, output=output, cached_input=cached_input)


DEFAULT_PRICES: dict[str, Price] = {
    # OpenAI
    "gpt-5.5": _p(5.00, 30.00, 0.50),
    "gpt-5.4": _p(2.50, 15.00, 0.25),
    "gpt-5.4-mini": _p(0.75, 4.50, 0.075),
    "gpt-5.4-nano": _p(0.20, 1.25, 0.02),
    "gpt-4.1": _p(2.00, 8.00, 0.50),
    "gpt-4.1-mini": _p(0.40, 1.60, 0.10),
    "gpt-4.1-nano": _p(0.10, 0.40, 0.025),
    "gpt-4o": _p(2.50, 10.00, 1.25),
    "gpt-4o-mini": _p(0.15, 0.60, 0.075),
    # Anthropic (cache reads at a tenth of input; cache writes are counted as input)
    "claude-opus-4-7": _p(5.00, 25.00, 0.50),
    "claude-opus-4-6": _p(5.00, 25.00, 0.50),
    "claude-sonnet-4-6": _p(3.00, 15.00, 0.30),
    "claude-sonnet-4-5": _p(3.00, 15.00, 0.30),
    "claude-haiku-4-5": _p(1.00, 5.00, 0.10),
    "claude-3-5-haiku": _p(0.80, 4.00, 0.08),
}
"""The shipped prices (compiled :data:`PRICES_DATE`); a user's table overrides them per model."""


LOCAL = Price(input=0, output=0)
"""The price of a model that runs on this machine."""


def parse_prices(data: Any, origin: str) -> dict[str, Price]:
    """A price table from plain data (a YAML or TOML mapping); :class:`PriceError` naming ``origin``."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise PriceError(
            f"{origin}: prices map model names to {{input, output, cached_input, batch_discount}} in dollars "
            f"per million tokens; got {type(data).__name__}."
        )
    table: dict[str, Price] = {}
    for model, entry in data.items():
        if isinstance(entry, Price):
            table[str(model)] = entry
            continue
        if not isinstance(entry, Mapping):
            raise PriceError(
                f"{origin}: the price of {model!r} must be a mapping such as {{input: 0.15, output: 0.6}}."
            )
        try:
            table[str(model)] = Price(**dict(entry))
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'price'}: {e['msg']}" for e in error.errors(include_url=False)
            )
            fields = ", ".join(Price.model_fields)
            raise PriceError(f"{origin}: the price of {model!r} is not valid ({problems}). Fields: {fields}.") from None
    return table


class PriceTable:
    """Prices by model name: the shipped defaults with the user's tables on top."""

    def __init__(self, *overrides: Mapping[str, Price]) -> None:
        self.prices: dict[str, Price] = dict(DEFAULT_PRICES)
        for table in overrides:
            self.prices.update(table)

    def price_of(self, llm: LLM) -> Price | None:
        """What ``llm``'s tokens cost: nothing for a model that runs locally, else its model's price."""
        return LOCAL if llm.runs_locally else self.lookup(llm.model_name)

    def lookup(self, model_name: str) -> Price | None:
        """The price of ``model_name``, or of its base name for a dated snapshot; None when unknown."""
        price = self.prices.get(model_name)
        if price is None:
            base = _SNAPSHOT.sub("", model_name)
            price = self.prices.get(base) if base != model_name else None
        return price


def load_prices(pipeline_prices: Mapping[str, Any] | None = None) -> PriceTable:
    """The table in force: the shipped one, the config file's ``[prices]``, then a pipeline's."""
    from taskloom.config import config_path, load_config

    configured = parse_prices(load_config().get("prices"), f"prices in {config_path()}")
    own = parse_prices(pipeline_prices, "the pipeline's prices") if pipeline_prices else {}
    return PriceTable(configured, own)


def format_dollars(amount: float | None) -> str:
    """``$0.0123`` with enough digits to show small runs, or ``no price``."""
    if amount is None:
        return "no price"
    if amount == 0:
        return "$0"
    return f"${amount:.4f}" if amount < 1 else f"${amount:,.2f}"


__all__ = [
    "DEFAULT_PRICES",
    "LOCAL",
    "PRICES_DATE",
    "Price",
    "PriceError",
    "PriceTable",
    "format_dollars",
    "load_prices",
    "parse_prices",
]
