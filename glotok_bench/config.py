"""Frozen attrs configs loaded from TOML, with errors that name the key path and file.

A config class is a ``@attrs.frozen`` class whose fields all have defaults. A field made
with :func:`component_field` holds a :class:`ComponentChoice`: a TOML table whose ``name``
picks a registered component and whose other keys are validated against that
component's own ``Config`` class, so a plugin's options are checked as strictly as ours.

A config file may start with ``extends = "other.toml"`` (relative to the file): the
other file is loaded first and this one is merged over it, table by table.
"""

from __future__ import annotations

import math
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import attrs

from glotok_bench import registry as _registry
from glotok_bench.errors import ConfigError
from glotok_bench.registry import closest_names
from glotok_bench.validators import FieldValueError

T = TypeVar("T")

_COMPONENT_KIND = "glotok_component_kind"


@attrs.frozen
class ComponentChoice:
    """A component picked by name, with its options as the component's typed ``Config``."""

    name: str
    config: Any


def component_field(kind: str, default: str) -> Any:
    """An attrs field selecting a component of ``kind``, defaulting to ``default``."""

    def make_default() -> ComponentChoice:
        return ComponentChoice(default, _registry.get_registry().config_class(kind, default)())

    return attrs.field(factory=make_default, metadata={_COMPONENT_KIND: kind})


# ---------------------------------------------------------------------------------------
# Loading


def load_config(
    cls: type[T], path: str | Path, overrides: Sequence[str] = ()
) -> T:
    """Load ``cls`` from a TOML file, then apply ``key.path=value`` overrides."""
    path = Path(path)
    data = read_toml_with_extends(path)
    data = apply_overrides(data, overrides)
    return structure(cls, data, source=str(path), overrides=overrides)


def read_toml_with_extends(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    resolved = path.resolve()
    if resolved in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, resolved))
        raise ConfigError(f"{path}: 'extends' loops back on itself: {chain}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not a UTF-8 text file (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
            f"config files are UTF-8 TOML"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: 'extends' must be a file path string, got {parent!r}")
    base = read_toml_with_extends(path.parent / parent, (*_seen, resolved))
    return deep_merge(base, data)


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Tables merge key by key; anything else in ``update`` replaces the base value.

    A component table whose ``name`` changes replaces the base table whole, because the
    base's options belong to a different component.
    """
    merged = dict(base)
    for key, value in update.items():
        old = merged.get(key)
        if (
            isinstance(value, Mapping)
            and isinstance(old, Mapping)
            and value.get("name", old.get("name")) == old.get("name")
        ):
            merged[key] = deep_merge(old, value)
        else:
            merged[key] = value
    return merged


def parse_override(override: str) -> tuple[list[str], Any]:
    """``"a.b.c=4096"`` -> (["a", "b", "c"], 4096). Values are TOML; bare words are strings."""
    key, sep, raw = override.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {override!r} must look like 'section.key=value'")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.split("."), value


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    result = _deep_copy(data)
    for override in overrides:
        keys, value = parse_override(override)
        set_path(result, keys, value, what=f"override {override!r}")
    return result


def set_path(data: dict[str, Any], keys: Sequence[str], value: Any, *, what: str = "setting") -> None:
    """Set ``data[k0][k1]...`` to ``value`` in place, creating tables on the way.

    Setting a component's ``name`` to another component drops the old one's options, as
    ``extends`` does: they belong to a different ``Config``.
    """
    table = data
    for depth, key in enumerate(keys[:-1]):
        child = table.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{what}: {'.'.join(keys[: depth + 1])} is a value, not a table")
        table = child
    last = keys[-1]
    # Component tables are always nested; a top-level `name` is the run's own name.
    if last == "name" and len(keys) > 1 and table and table.get("name") != value:
        table.clear()  # as in deep_merge: a table with no name counts as another component
    table[last] = _deep_copy(value) if isinstance(value, Mapping) else value


def _deep_copy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in data.items()}


# ---------------------------------------------------------------------------------------
# Structuring: plain TOML data -> typed frozen attrs instances


def structure(cls: type[T], data: Any, source: str = "<config>", overrides: Sequence[str] = ()) -> T:
    """Build ``cls`` from plain data; every problem is reported with its key path, against
    the ``--set`` override that set it, else against ``source``."""
    errors: list[str] = []
    result = _structure(cls, data, "", errors)
    if errors:
        lines = "\n".join(f"  {_origin(error, overrides, source)}: {error}" for error in errors)
        raise ConfigError(f"invalid config ({len(errors)} problem(s)):\n{lines}")
    return result


def _origin(error: str, overrides: Sequence[str], source: str) -> str:
    """``--set KEY=VALUE`` when the last override touching the error's key path set it."""
    where = error.partition(": ")[0]
    for override in reversed(overrides):
        key = override.partition("=")[0].strip()
        if where == key or where.startswith((f"{key}.", f"{key}[")):
            return f"--set {override}"
    return source


def _structure(tp: Any, value: Any, path: str, errors: list[str], base: Any = None) -> Any:
    """``base``: the default this value replaces; a partial table keeps base's other fields."""
    where = path or "<top level>"
    if tp is Any:
        return value
    if attrs.has(tp):
        return _structure_attrs(tp, value, path, errors, base if isinstance(base, tp) else None)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        if value is False and type(None) in args and bool not in args:
            return None  # TOML has no null: `metric = false` switches an optional section off
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            return _structure(non_none[0], value, path, errors, base)
        for option in non_none:
            trial: list[str] = []
            result = _structure(option, value, path, trial)
            if not trial:
                return result
        errors.append(f"{where}: {value!r} matches none of {_type_name(tp)}")
        return None
    if origin is Literal:
        if value not in args:
            allowed = ", ".join(repr(a) for a in args)
            errors.append(f"{where}: {value!r} is not one of {allowed}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            errors.append(f"{where}: expected a list, got {_describe(value)}")
            return None
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                errors.append(f"{where}: expected {len(args)} items, got {len(value)}")
                return None
            items = [_structure(a, v, f"{path}[{i}]", errors) for i, (a, v) in enumerate(zip(args, value, strict=True))]
        else:
            item_type = args[0] if args else Any
            items = [_structure(item_type, v, f"{path}[{i}]", errors) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            errors.append(f"{where}: expected a table, got {_describe(value)}")
            return None
        value_type = args[1] if len(args) == 2 else Any
        return {k: _structure(value_type, v, _join(path, k), errors) for k, v in value.items()}
    return _structure_scalar(tp, value, where, errors)


def _structure_scalar(tp: Any, value: Any, where: str, errors: list[str]) -> Any:
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):  # a NaN weight passes every `>= 0` check
                errors.append(f"{where}: must be a finite number, got {value!r}")
                return None
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is bool or tp is str:
        if isinstance(value, tp):
            return value
    elif tp is Path:
        if isinstance(value, str):
            return Path(value)
    else:
        raise TypeError(f"config type {tp!r} at {where} is not supported by glotok_bench.config")
    errors.append(f"{where}: expected {_type_name(tp)}, got {_describe(value)}")
    return None


def _structure_attrs(cls: type, value: Any, path: str, errors: list[str], base: Any = None) -> Any:
    where = path or "<top level>"
    if not isinstance(value, Mapping):
        errors.append(f"{where}: expected a table, got {_describe(value)}")
        return None
    attrs.resolve_types(cls)
    fields = {f.alias if f.alias else f.name: f for f in attrs.fields(cls) if f.init}
    for key in value:
        if key not in fields:
            errors.append(
                f"{_join(path, key)}: unknown key.{closest_names(key, fields)} "
                f"Valid keys here: {', '.join(sorted(fields))}."
            )
    kwargs = {}
    for key, field in fields.items():
        if key not in value:
            continue
        kind = field.metadata.get(_COMPONENT_KIND)
        if kind is not None:
            kwargs[key] = _structure_component(kind, field, value[key], _join(path, key), errors)
        else:
            default = getattr(base, field.name) if base is not None else _default_of(field)
            kwargs[key] = _structure(field.type, value[key], _join(path, key), errors, default)
    if base is not None:  # keys the table leaves out keep the base's values, not the class's
        for key, field in fields.items():
            kwargs.setdefault(key, getattr(base, field.name))
    if errors:  # the result is thrown away anyway; don't build a half-valid object
        return None
    try:
        return cls(**kwargs)
    except FieldValueError as exc:
        errors.append(f"{_join(path, exc.field)}: {exc.message}")
        return None
    except (ValueError, TypeError) as exc:
        errors.append(f"{where}: {exc}")
        return None


def _structure_component(
    kind: str, field: attrs.Attribute, value: Any, path: str, errors: list[str]
) -> ComponentChoice | None:
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, Mapping):
        errors.append(f"{path}: expected a table with a 'name' key, got {_describe(value)}")
        return None
    options = dict(value)
    name = options.pop("name", None)
    if name is None:
        name = field.default.factory().name
    if not isinstance(name, str):
        errors.append(f"{_join(path, 'name')}: expected a string, got {_describe(name)}")
        return None
    registry = _registry.get_registry()
    try:
        config_cls = registry.config_class(kind, name)
    except Exception as exc:  # noqa: BLE001 - registry errors are reported at their key path
        errors.append(f"{_join(path, 'name')}: {exc}")
        return None
    config = _structure_attrs(config_cls, options, path, errors)
    return None if config is None else ComponentChoice(name, config)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


# ---------------------------------------------------------------------------------------
# Unstructuring: typed instances -> plain data (for resolved-config files and records)


def to_dict(instance: Any) -> Any:
    """Plain data for TOML/JSON. TOML has no null: a ``None`` field whose default is
    ``None`` is dropped, and one whose default is a section is written as ``false``."""
    if isinstance(instance, ComponentChoice):
        return {"name": instance.name, **to_dict(instance.config)}
    if attrs.has(type(instance)):
        out = {}
        for field in attrs.fields(type(instance)):
            value = getattr(instance, field.name)
            if value == {} and _default_of(field) == {}:
                continue  # an unused optional table: omitted, so adding one keeps config ids
            if value is not None:
                out[field.alias or field.name] = to_dict(value)
            elif _default_of(field) is not None:
                out[field.alias or field.name] = False  # switched off; see _structure
        return out
    if isinstance(instance, Mapping):
        return {str(k): to_dict(v) for k, v in instance.items() if v is not None}
    if isinstance(instance, list | tuple):
        return [to_dict(v) for v in instance]
    if isinstance(instance, Path):
        return str(instance)
    return instance


def _default_of(field: attrs.Attribute) -> Any:
    default = field.default
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        return default.factory() if not default.takes_self else None
    return None if default is attrs.NOTHING else default


def config_digest(instance: Any, length: int = 12) -> str:
    """A short hash of a config's resolved content: the same settings, the same digest."""
    import hashlib
    import json

    canonical = json.dumps(to_dict(instance), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]


def dumps_toml(instance: Any) -> str:
    import tomli_w

    return tomli_w.dumps(to_dict(instance))
