from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import attrs
import pytest

from glotok_bench.errors import RegistryError
from glotok_bench.hookspecs import hookimpl
from glotok_bench.registry import (
    Component,
    Registry,
    build_registry,
    load_entry_point_plugins,
    new_plugin_manager,
)

REPO = Path(__file__).resolve().parents[1]


class _Widget:
    @attrs.frozen(kw_only=True)
    class Config:
        size: int = 3

    def __init__(self, config, *, in_channels: int):
        self.config, self.in_channels = config, in_channels


class _PluginA:
    @hookimpl
    def glotok_quantizers(self):
        return [Component("widget", f"{__name__}:_Widget", "test widget")]


class _PluginB:
    @hookimpl
    def glotok_quantizers(self):
        return [Component("widget", f"{__name__}:_Widget", "same name again")]


def _registry(**plugins) -> Registry:
    manager = new_plugin_manager()
    for name, plugin in plugins.items():
        manager.register(plugin, name=name)
    return Registry(manager)


def test_builtin_components_come_from_entry_points():
    registry = build_registry()
    assert {"demo", "imagefolder"} <= set(registry.names("dataset"))
    entry = registry.get("dataset", "demo")
    assert entry.plugin == "builtin-datasets"
    assert entry.distribution.startswith("glotok-bench ")


def test_create_builds_with_default_config_and_context():
    widget = _registry(a=_PluginA()).create("quantizer", "widget", in_channels=7)
    assert widget.config.size == 3 and widget.in_channels == 7


def test_duplicate_names_are_an_error_naming_both_plugins():
    registry = _registry(a=_PluginA(), b=_PluginB())  # builds: `plugins list` must still run
    with pytest.raises(RegistryError, match=r"quantizer 'widget' is registered by plugin 'a'.* and plugin 'b'"):
        registry.get("quantizer", "widget")
    with pytest.raises(RegistryError, match=r"plugin name conflict: quantizer 'widget'"):
        registry.check_no_conflicts()


def test_unknown_name_lists_registered_names_and_closest_match():
    registry = _registry(a=_PluginA())
    with pytest.raises(RegistryError) as info:
        registry.get("quantizer", "widgit")
    message = str(info.value)
    assert "Did you mean 'widget'?" in message and "Registered quantizers: widget" in message


def test_unknown_kind_is_an_error():
    with pytest.raises(RegistryError, match="Did you mean 'quantizer'"):
        _registry().names("quantiser")


def test_target_that_does_not_import_is_reported_by_component():
    class Broken:
        @hookimpl
        def glotok_metrics(self):
            return [Component("ghost", "no_such_module_xyz:Thing")]

    with pytest.raises(RegistryError, match="'ghost'.*no_such_module_xyz"):
        _registry(broken=Broken()).load("metric", "ghost")


def test_plugin_failing_to_import_is_reported_and_others_still_load():
    good = metadata.EntryPoint("good", "glotok_builtin.datasets", "glotok_bench")
    bad = metadata.EntryPoint("bad", "glotok_no_such_plugin_module", "glotok_bench")
    manager = new_plugin_manager()
    seen = []
    _, failures = load_entry_point_plugins(manager, [bad, good], on_failure=seen.append)
    assert [f.plugin for f in failures] == ["bad"] == [f.plugin for f in seen]
    assert "ModuleNotFoundError" in failures[0].error
    registry = Registry(manager, failures=failures)
    assert "demo" in registry.names("dataset")
    with pytest.raises(RegistryError, match="failed to load.*bad"):
        registry.get("dataset", "missing")


def test_example_plugin_installs_and_registers(tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(REPO / "plugins" / "example-plugin")],
        check=True, capture_output=True, timeout=300,
    )
    code = (
        "from glotok_bench.registry import build_registry\n"
        "r = build_registry()\n"
        "e = r.get('teacher', 'uniform-sphere')\n"
        "codes = r.create('teacher', 'uniform-sphere').build(cache_dir=None)\n"
        "print(e.plugin, e.distribution, tuple(codes.shape), round(float(codes.norm(dim=1).mean()), 4))\n"
    )
    env = {**__import__("os").environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["example-uniform-teacher", "glotok-example-plugin", "0.1.0", "(4096,", "8)", "1.0"]
    listing = subprocess.run(
        [sys.executable, "-m", "glotok_bench", "plugins", "list"], env=env, capture_output=True, text=True
    )
    assert "uniform-sphere" in listing.stdout and "glotok-example-plugin 0.1.0" in listing.stdout


def test_a_plugin_command_is_listed_in_help_and_runs(capsys):
    import click

    from glotok_bench.cli import cli, main
    from glotok_bench.registry import using_registry

    class CommandPlugin:
        @hookimpl
        def glotok_cli_commands(self, cli):
            @cli.command("say-hello", help="Greets (test plugin).")
            @click.option("--name", default="world")
            def say_hello(name):
                click.echo(f"hello {name}")

    try:
        with using_registry(build_registry(extra_plugins={"test-commands": CommandPlugin()})):
            main(["--help"])
            assert "say-hello" in capsys.readouterr().out
            main(["say-hello", "--name", "plugin"])
            assert capsys.readouterr().out == "hello plugin\n"
    finally:
        cli.commands.pop("say-hello", None)  # the group is module-level: leave it as found
