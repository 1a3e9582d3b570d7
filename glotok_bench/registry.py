"""Turns a (kind, name) pair into a component, through plugins found via entry points.

Resolution follows one path: entry point -> plugin module -> hook -> :class:`Component`
-> ``load()`` imports its target -> ``create()`` builds it with its typed ``Config``.
Pretrained-weight lookup is deliberately not here (see :mod:`glotok_bench.weights`).
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib import metadata
from typing import Any

import attrs
import pluggy

from glotok_bench import hookspecs
from glotok_bench.errors import RegistryError

ENTRY_POINT_GROUP = hookspecs.PROJECT_NAME

# component kind -> the hook that declares components of that kind
KIND_HOOKS: dict[str, str] = {
    "dataset": "glotok_datasets",
    "autoencoder": "glotok_autoencoders",
    "quantizer": "glotok_quantizers",
    "residual_head": "glotok_residual_heads",
    "semantic_supervision": "glotok_semantic_supervision",
    "teacher": "glotok_teachers",
    "generator": "glotok_generators",
    "metric": "glotok_metrics",
    "tokenizer_format": "glotok_tokenizer_formats",
}


@attrs.frozen
class Component:
    """A named, lazily imported implementation of one component kind."""

    name: str
    target: str = attrs.field()
    summary: str = ""

    @target.validator
    def _check_target(self, _attribute: attrs.Attribute, value: str) -> None:
        if value.count(":") != 1:
            raise ValueError(f"component target must look like 'module:attribute', got {value!r}")

    def load(self) -> Any:
        module_name, attribute = self.target.split(":")
        try:
            module = importlib.import_module(module_name)
            return getattr(module, attribute)
        except (ImportError, AttributeError) as exc:
            raise RegistryError(
                f"component {self.name!r} points to {self.target!r}, which cannot be imported: {exc}"
            ) from exc


@attrs.frozen
class Registered:
    kind: str
    component: Component
    plugin: str
    distribution: str


@attrs.frozen
class PluginFailure:
    plugin: str
    distribution: str
    error: str


@attrs.frozen
class NameConflict:
    """Two plugins registered one (kind, name): neither is used, since either choice would
    make a run depend silently on which package happened to load first."""

    kind: str
    name: str
    registrations: tuple[Registered, ...]

    def describe(self) -> str:
        by = " and ".join(f"plugin {r.plugin!r} ({r.distribution})" for r in self.registrations)
        return f"{self.kind} {self.name!r} is registered by {by}; uninstall or rename one"


def closest_names(name: str, candidates: Iterable[str]) -> str:
    """A ' Did you mean ...?' hint, or an empty string."""
    matches = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.5)
    return f" Did you mean {matches[0]!r}?" if matches else ""


class Registry:
    """All components contributed by the registered plugins, indexed by kind and name."""

    def __init__(
        self,
        plugin_manager: pluggy.PluginManager,
        distributions: Mapping[str, str] | None = None,
        failures: Iterable[PluginFailure] = (),
    ):
        self.plugin_manager = plugin_manager
        self.distributions = dict(distributions or {})
        self.failures: tuple[PluginFailure, ...] = tuple(failures)
        self._components: dict[str, dict[str, Registered]] = {kind: {} for kind in KIND_HOOKS}
        self._conflicts: dict[tuple[str, str], NameConflict] = {}
        for kind, hook_name in KIND_HOOKS.items():
            hook_caller = getattr(plugin_manager.hook, hook_name)
            for impl in hook_caller.get_hookimpls():  # registration order
                self._collect(kind, impl.plugin_name, impl.function())

    def _collect(self, kind: str, plugin: str, components: Iterable[Component] | None) -> None:
        distribution = self.distributions.get(plugin, "registered at run time")
        for component in components or ():
            if not isinstance(component, Component):
                raise RegistryError(
                    f"plugin {plugin!r} returned {component!r} from its {kind} hook; "
                    "expected glotok_bench.registry.Component"
                )
            registered = Registered(kind, component, plugin, distribution)
            existing = self._components[kind].get(component.name)
            if existing is not None:
                # Recorded, not raised: `plugins list` must still run to show it.
                earlier = self._conflicts.get((kind, component.name))
                before = earlier.registrations if earlier else (existing,)
                self._conflicts[(kind, component.name)] = NameConflict(kind, component.name, (*before, registered))
                continue
            self._components[kind][component.name] = registered

    @property
    def conflicts(self) -> tuple[NameConflict, ...]:
        return tuple(self._conflicts[key] for key in sorted(self._conflicts))

    def check_no_conflicts(self) -> None:
        """Raise one error listing every name two plugins registered."""
        if self._conflicts:
            raise RegistryError(
                "plugin name conflict: " + "; ".join(c.describe() for c in self.conflicts)
                + " (`glotok-bench plugins list` shows every component)"
            )

    def kinds(self) -> tuple[str, ...]:
        return tuple(KIND_HOOKS)

    def names(self, kind: str) -> list[str]:
        return sorted(self._components[self._check_kind(kind)])

    def entries(self, kind: str) -> list[Registered]:
        return [self._components[kind][name] for name in self.names(kind)]

    def get(self, kind: str, name: str) -> Registered:
        components = self._components[self._check_kind(kind)]
        conflict = self._conflicts.get((kind, name))
        if conflict is not None:
            raise RegistryError(conflict.describe())
        try:
            return components[name]
        except KeyError:
            known = ", ".join(sorted(components)) or "none"
            raise RegistryError(
                f"unknown {kind} {name!r}.{closest_names(name, components)} Registered {kind}s: {known}."
                + self._failure_hint()
            ) from None

    def load(self, kind: str, name: str) -> Any:
        return self.get(kind, name).component.load()

    def config_class(self, kind: str, name: str) -> type:
        implementation = self.load(kind, name)
        config_cls = getattr(implementation, "Config", None)
        if config_cls is None or not attrs.has(config_cls):
            raise RegistryError(
                f"{kind} {name!r} ({self.get(kind, name).component.target}) has no attrs `Config` class"
            )
        return config_cls

    def create(self, kind: str, name: str, config: Any = None, **context: Any) -> Any:
        """Build a component; ``config`` defaults to its ``Config()`` defaults."""
        implementation = self.load(kind, name)
        if config is None:
            config = self.config_class(kind, name)()
        return implementation(config, **context)

    def hook(self) -> Any:
        return self.plugin_manager.hook

    def _check_kind(self, kind: str) -> str:
        if kind not in KIND_HOOKS:
            raise RegistryError(
                f"unknown component kind {kind!r}.{closest_names(kind, KIND_HOOKS)} "
                f"Kinds: {', '.join(KIND_HOOKS)}."
            )
        return kind

    def _failure_hint(self) -> str:
        if not self.failures:
            return ""
        broken = ", ".join(f.plugin for f in self.failures)
        return f" (Plugins that failed to load and may have provided it: {broken}.)"


def new_plugin_manager() -> pluggy.PluginManager:
    plugin_manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    plugin_manager.add_hookspecs(hookspecs)
    return plugin_manager


def load_entry_point_plugins(
    plugin_manager: pluggy.PluginManager,
    entry_points: Iterable[metadata.EntryPoint] | None = None,
    on_failure: Callable[[PluginFailure], None] | None = None,
) -> tuple[dict[str, str], list[PluginFailure]]:
    """Register every plugin of the entry-point group; a broken one does not stop the rest.

    pluggy's own ``load_setuptools_entrypoints`` aborts on the first import error, which
    would let one bad third-party package take every built-in component down with it.
    Returns the distribution ("name version") of each registered plugin, and the failures.
    """
    if entry_points is None:
        entry_points = metadata.entry_points(group=ENTRY_POINT_GROUP)
    distributions: dict[str, str] = {}
    failures: list[PluginFailure] = []
    for entry_point in sorted(entry_points, key=lambda ep: ep.name):
        if plugin_manager.get_plugin(entry_point.name) is not None:
            continue
        dist = entry_point.dist
        distribution = f"{dist.name} {dist.version}" if dist is not None else "unknown distribution"
        try:
            plugin = entry_point.load()
            plugin_manager.register(plugin, name=entry_point.name)
        except Exception as exc:  # noqa: BLE001 - any failure in third-party code is reported
            failure = PluginFailure(entry_point.name, distribution, f"{type(exc).__name__}: {exc}")
            failures.append(failure)
            (on_failure or _warn_failure)(failure)
            continue
        distributions[entry_point.name] = distribution
    return distributions, failures


def _warn_failure(failure: PluginFailure) -> None:
    warnings.warn(
        f"glotok-bench plugin {failure.plugin!r} from {failure.distribution} failed to load "
        f"and was skipped: {failure.error}",
        stacklevel=3,
    )


def build_registry(extra_plugins: Mapping[str, object] | None = None) -> Registry:
    """A fresh registry from the installed entry points plus ``extra_plugins`` (tests)."""
    plugin_manager = new_plugin_manager()
    distributions, failures = load_entry_point_plugins(plugin_manager)
    for name, plugin in (extra_plugins or {}).items():
        plugin_manager.register(plugin, name=name)
    return Registry(plugin_manager, distributions, failures)


_active_registry: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, built from the entry points on first use."""
    global _active_registry
    if _active_registry is None:
        _active_registry = build_registry()
    return _active_registry


@contextlib.contextmanager
def using_registry(registry: Registry) -> Iterator[Registry]:
    """Make ``registry`` the process-wide one for the duration (tests, embedding)."""
    global _active_registry
    previous, _active_registry = _active_registry, registry
    try:
        yield registry
    finally:
        _active_registry = previous
