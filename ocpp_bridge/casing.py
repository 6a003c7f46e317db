"""camelCase ⇄ snake_case for OCPP payload keys, as the ``ocpp`` package converts them but
with each key's conversion remembered: the package runs two regular expressions per key
per message, which was the largest single cost of a MeterValues frame (profiled with
``python -m bench.ocpp_throughput``). Keys come from the 1.6 schemas, which reject unknown
properties before conversion, so the memo stays small."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from ocpp.charge_point import camel_to_snake_case, snake_to_camel_case


@lru_cache(maxsize=4096)
def _snake(key: str) -> str:
    return next(iter(camel_to_snake_case({key: None})))


@lru_cache(maxsize=4096)
def _camel(key: str) -> str:
    return next(iter(snake_to_camel_case({key: None})))


def to_snake(data: Any) -> Any:
    if isinstance(data, dict):
        return {_snake(k): to_snake(v) for k, v in data.items()}
    if isinstance(data, list):
        return [to_snake(v) for v in data]
    return data


def to_camel(data: Any) -> Any:
    if isinstance(data, dict):
        return {_camel(k): to_camel(v) for k, v in data.items()}
    if isinstance(data, list):
        return [to_camel(v) for v in data]
    return data
