"""Documents whose fragments spread each other twice, level after level, and a parser that
counts how often each fragment's selections are read: work that walks a fragment again at
every spread reads the deepest one 2^levels times."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from graphql import FragmentDefinitionNode, SelectionSetNode
from graphql import parse as graphql_parse


def doubling(levels: int, on: str, leaf: str, operation: str = "{ ...F0 }") -> str:
    """``operation`` spreading F0, which spreads F1 twice, … down to F``levels-1``,
    which selects ``leaf`` (fragments on the type ``on``)."""
    fragments = [f"fragment F{i} on {on} {{ ...F{i + 1} ...F{i + 1} }}"
                 for i in range(levels - 1)]
    return " ".join([operation, *fragments, f"fragment F{levels - 1} on {on} {{ {leaf} }}"])


class _CountedSelections(SelectionSetNode):
    """A fragment's selection set that counts the reads of its selections."""

    reads: Counter[str]
    fragment: str

    @property  # type: ignore[override]
    def selections(self) -> Any:
        self.reads[self.fragment] += 1
        return self.__dict__["selections"]


# graphql-core's visitors dispatch on ``kind``, which a subclass would take from its name.
_CountedSelections.kind = SelectionSetNode.kind


def counting_parser(monkeypatch: pytest.MonkeyPatch, module: str = "graph.pipeline"
                    ) -> Counter[str]:
    """Makes ``module``'s ``parse`` hand out documents whose fragments count how often
    their selections are read; returns the counts, by fragment name. The caches by
    query text are emptied, so a text sent before is parsed (and looked into) again."""
    from graph import cost, pipeline

    pipeline._parsed.cache_clear()
    pipeline._validated.cache_clear()
    cost._ESTIMATES.clear()
    reads: Counter[str] = Counter()

    def parse(source: Any, **kwargs: Any) -> Any:
        document = graphql_parse(source, **kwargs)
        for definition in document.definitions:
            if isinstance(definition, FragmentDefinitionNode):
                counted = object.__new__(_CountedSelections)
                counted.__dict__.update(definition.selection_set.__dict__)
                object.__setattr__(counted, "reads", reads)
                object.__setattr__(counted, "fragment", definition.name.value)
                object.__setattr__(definition, "selection_set", counted)
        return document

    monkeypatch.setattr(f"{module}.parse", parse)
    return reads
