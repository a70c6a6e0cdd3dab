"""Per-model token prices (LLM_PRICES) and the cost of a call, in exact Decimal arithmetic.

LLM_PRICES is JSON: {"model-name": {"prompt": 0.15, "completion": 0.6}, ...} in USD per million
tokens. A "*" entry prices every model not named. An unpriced model costs 0.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from orchestration.agents.base import AgentConfigError

PER_TOKENS = Decimal(1_000_000)


@dataclass(frozen=True)
class Price:
    prompt: Decimal = Decimal(0)
    completion: Decimal = Decimal(0)


@dataclass(frozen=True)
class PriceTable:
    prices: dict[str, Price] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: str | None) -> PriceTable:
        """The table from LLM_PRICES; a clear AgentConfigError when it is malformed."""
        if raw is None or not raw.strip():
            return cls()
        try:
            data = json.loads(raw, parse_float=Decimal, parse_int=Decimal)
        except json.JSONDecodeError as exc:
            raise AgentConfigError(f"LLM_PRICES is not valid JSON: {exc.msg}") from exc
        if not isinstance(data, dict):
            raise AgentConfigError('LLM_PRICES must be a JSON object: {"model": {"prompt": ...}}')
        prices: dict[str, Price] = {}
        for model, entry in data.items():
            if not isinstance(entry, dict):
                raise AgentConfigError(
                    f"LLM_PRICES[{model!r}] must be an object with prompt and completion prices"
                )
            unknown = set(entry) - {"prompt", "completion"}
            if unknown:
                raise AgentConfigError(
                    f"LLM_PRICES[{model!r}] has unknown keys {sorted(unknown)}; "
                    "expected prompt and completion (USD per million tokens)"
                )
            prices[str(model)] = Price(
                prompt=_amount(model, "prompt", entry.get("prompt", 0)),
                completion=_amount(model, "completion", entry.get("completion", 0)),
            )
        return cls(prices)

    def price(self, model: str | None) -> Price:
        if model is not None and model in self.prices:
            return self.prices[model]
        return self.prices.get("*", Price())

    def cost(self, model: str | None, prompt_tokens: int, completion_tokens: int) -> Decimal:
        """USD for this many tokens of model."""
        price = self.price(model)
        total = price.prompt * Decimal(int(prompt_tokens)) + price.completion * Decimal(
            int(completion_tokens)
        )
        return total / PER_TOKENS


def _amount(model: str, kind: str, value: Any) -> Decimal:
    if isinstance(value, bool):
        raise AgentConfigError(f"LLM_PRICES[{model!r}].{kind} must be a number")
    try:
        amount = Decimal(str(value)) if not isinstance(value, Decimal) else value
    except (InvalidOperation, ValueError) as exc:
        raise AgentConfigError(f"LLM_PRICES[{model!r}].{kind} must be a number") from exc
    if not amount.is_finite() or amount < 0:
        raise AgentConfigError(f"LLM_PRICES[{model!r}].{kind} must be a non-negative number")
    return amount
