"""Registries of small named rules, in the manner of torch.utils.flop_counter.

A rule is registered once per key (an aten op, or an OpOverloadPacket that
covers its overloads); a second registration for the same key is an error,
so two rules never silently compete.  A caller may override rules for one
call (``registry.with_overrides({op: rule})``) without changing the registry.
"""
from __future__ import annotations

from typing import Any, Callable, Generic, Iterator, Mapping, TypeVar

Rule = TypeVar("Rule", bound=Callable)


class Registry(Generic[Rule]):
    """Rules by key; lookups of an overload fall back to its packet."""

    def __init__(self, what: str, rules: Mapping[Any, Rule] | None = None):
        self.what = what
        self._rules: dict[Any, Rule] = dict(rules or {})

    def register(self, *keys) -> Callable[[Rule], Rule]:
        """Decorator: register ``rule`` for each key; a key already taken raises."""
        def wrap(rule: Rule) -> Rule:
            for key in keys:
                if key in self._rules:
                    raise ValueError(f"{self.what}: {key} already has the rule "
                                     f"{self._rules[key].__name__}")
            for key in keys:
                self._rules[key] = rule
            return rule
        return wrap

    def get(self, target) -> Rule | None:
        """The rule of an fx node's target (overload or its packet, or the
        qualified name of an op a library registers when it is imported:
        ``"transformers::grouped_mm_fallback"``), or None."""
        rule = self._rules.get(target)
        if rule is None and hasattr(target, "overloadpacket"):
            rule = self._rules.get(target.overloadpacket)
        if rule is None and hasattr(target, "_schema"):
            rule = self._rules.get(target._schema.name)
        return rule

    def with_overrides(self, overrides: Mapping[Any, Rule] | None) -> "Registry[Rule]":
        """A copy in which ``overrides`` replace (or add to) the registered rules."""
        if not overrides:
            return self
        return Registry(self.what, {**self._rules, **overrides})

    def __contains__(self, key) -> bool:
        return self.get(key) is not None

    def __iter__(self) -> Iterator:
        return iter(self._rules)

    def items(self):
        """(key, rule) pairs in the order they were registered."""
        return self._rules.items()
