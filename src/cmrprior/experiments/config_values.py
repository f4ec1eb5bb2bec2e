"""Values read from YAML checked against the types of the config dataclasses' fields, in one place.

YAML gives whatever the user wrote: `n_splits: 1.7`, `n_splits: two`, `enabled: "false"` (a string, which
Python reads as true). Every config value passes through `coerce`, driven by its field's type hint
(`int`, `float`, `bool`, `str`, `X | None`, `tuple[X, ...]`, `tuple[X, Y]`, `dict[str, X]`, `Any`), so such a
value is a ConfigError naming its key instead of a traceback later or a silently wrong setting. Nested
config dataclasses are built by the caller (`cmrprior.experiments.config`).

`StrictLoader` is the YAML loader of config files: a key given twice in one mapping is an error naming the
key and its line (PyYAML keeps the last one silently).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

import yaml

from cmrprior.errors import ConfigError


class StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a mapping with the same key twice (ConfigError naming key and line)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, typing.Hashable) and key in seen:
                raise ConfigError(f"{key_node.start_mark.name}: key {key!r} given twice (lines {seen[key]} and "
                                  f"{line}); keep one")
            if isinstance(key, typing.Hashable):
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def field_types(cls: type) -> dict[str, Any]:
    """Resolved type hints of a dataclass's fields (its module's `from __future__ import annotations` strings)."""
    return typing.get_type_hints(cls)


def _describe(hint: Any) -> str:
    names = {int: "a whole number", float: "a number", bool: "true or false", str: "text"}
    if hint in names:
        return names[hint]
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def coerce(value: Any, hint: Any, key: str) -> Any:
    """`value` as the type `hint` says (a YAML list as a tuple, an int as a float, a whole float as an int,
    a number written as text such as `1e-3`, which YAML 1.1 reads as a string, as a float).

    Raises ConfigError naming `key` (e.g. "protocol.n_splits") when the value does not fit.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or (dataclasses.is_dataclass(hint) and isinstance(hint, type)):
        return value  # nested configs are built (and checked) by the caller
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for option in options:
            try:
                return coerce(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key} must be {' or '.join(_describe(o) for o in options)}"
                          f"{' or null' if type(None) in args else ''}, got {value!r}")
    if origin is tuple:
        items = list(value) if isinstance(value, (list, tuple)) else [value]  # a single value is a 1-tuple
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(items))
        if args and len(items) != len(args):
            raise ConfigError(f"{key} must be a list of {len(args)} values, got {value!r}")
        return tuple(coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(items, args))) if args else tuple(items)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        if not args:
            return dict(value)
        return {coerce(k, args[0], key): coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false (unquoted), got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key} must be a whole number, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} must be text, got {value!r}")
    if isinstance(hint, type) and not isinstance(value, hint):
        raise ConfigError(f"{key} must be {_describe(hint)}, got {value!r}")
    return value
