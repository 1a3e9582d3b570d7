from __future__ import annotations

from pathlib import Path
from typing import Literal

import attrs
import pytest

from glotok_bench import validators
from glotok_bench.config import (
    ComponentChoice,
    apply_overrides,
    component_field,
    dumps_toml,
    load_config,
    structure,
)
from glotok_bench.errors import ConfigError
from glotok_bench.hookspecs import hookimpl
from glotok_bench.registry import Component, Registry, new_plugin_manager, using_registry


class Codebook:
    @attrs.frozen(kw_only=True)
    class Config:
        size: int = 16384
        dim: int = 8
        normalize: bool = True


class Lookup:
    @attrs.frozen(kw_only=True)
    class Config:
        metric: Literal["cosine", "euclidean"] = "cosine"


class _Plugin:
    @hookimpl
    def glotok_quantizers(self):
        return [Component("codebook", f"{__name__}:Codebook"), Component("lookup", f"{__name__}:Lookup")]


@attrs.frozen(kw_only=True)
class Model:
    resolution: int = 256
    channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    quantizer: ComponentChoice = component_field("quantizer", "codebook")


@attrs.frozen(kw_only=True)
class Run:
    name: str = "run"
    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.95)
    steps: int | None = None
    model: Model = attrs.Factory(Model)


@pytest.fixture(autouse=True)
def registry():
    manager = new_plugin_manager()
    manager.register(_Plugin(), name="test")
    with using_registry(Registry(manager)) as registry:
        yield registry


def write(tmp_path, text, name="run.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_and_typed_values(tmp_path):
    run = load_config(Run, write(tmp_path, "lr = 1\n[model]\nchannel_mult = [1, 2]\n"))
    assert run.lr == 1.0 and isinstance(run.lr, float)
    assert run.model.channel_mult == (1, 2)
    assert run.model.quantizer == ComponentChoice("codebook", Codebook.Config())


def test_unknown_key_names_path_file_and_closest_key(tmp_path):
    path = write(tmp_path, "[model]\nresolutoin = 64\n")
    with pytest.raises(ConfigError) as info:
        load_config(Run, path)
    message = str(info.value)
    assert str(path) in message
    assert "model.resolutoin: unknown key. Did you mean 'resolution'?" in message


def test_wrong_types_are_all_reported_with_paths(tmp_path):
    path = write(tmp_path, 'lr = "fast"\nbetas = [0.9]\n[model]\nresolution = true\n')
    with pytest.raises(ConfigError) as info:
        load_config(Run, path)
    message = str(info.value)
    assert "3 problem(s)" in message
    assert "lr: expected float, got str 'fast'" in message
    assert "betas: expected 2 items, got 1" in message
    assert "model.resolution: expected int, got bool True" in message


def test_component_options_are_checked_against_the_component_config(tmp_path):
    run = load_config(Run, write(tmp_path, '[model.quantizer]\nname = "lookup"\nmetric = "euclidean"\n'))
    assert run.model.quantizer == ComponentChoice("lookup", Lookup.Config(metric="euclidean"))
    with pytest.raises(ConfigError, match=r"model\.quantizer\.metric: 'manhattan' is not one of"):
        load_config(Run, write(tmp_path, '[model.quantizer]\nname = "lookup"\nmetric = "manhattan"\n'))
    with pytest.raises(ConfigError, match=r"model\.quantizer\.sise: unknown key\. Did you mean 'size'"):
        load_config(Run, write(tmp_path, "[model.quantizer]\nsise = 4096\n"))
    with pytest.raises(ConfigError, match=r"model\.quantizer\.name: .*unknown quantizer 'lookpu'.*'lookup'"):
        load_config(Run, write(tmp_path, '[model.quantizer]\nname = "lookpu"\n'))


def test_dotted_overrides(tmp_path):
    run = load_config(
        Run, write(tmp_path, ""), ["model.quantizer.size=4096", "name=my run", "model.channel_mult=[1, 2, 4]"]
    )
    assert run.model.quantizer.config.size == 4096
    assert run.name == "my run"
    assert run.model.channel_mult == (1, 2, 4)
    with pytest.raises(ConfigError, match="must look like"):
        apply_overrides({}, ["model.size"])
    with pytest.raises(ConfigError, match="model.quantizer.sise: unknown key"):
        load_config(Run, write(tmp_path, ""), ["model.quantizer.sise=1"])


def test_extends_merges_and_a_new_component_name_replaces_its_options(tmp_path):
    write(tmp_path, 'name = "base"\nlr = 0.1\n[model.quantizer]\nsize = 512\n', "base.toml")
    child = write(tmp_path, 'extends = "base.toml"\nname = "child"\n', "child.toml")
    run = load_config(Run, child)
    assert (run.name, run.lr, run.model.quantizer.config.size) == ("child", 0.1, 512)
    other = write(tmp_path, 'extends = "base.toml"\n[model.quantizer]\nname = "lookup"\n', "other.toml")
    assert load_config(Run, other).model.quantizer == ComponentChoice("lookup", Lookup.Config())


def test_extends_loop_and_bad_toml_are_errors(tmp_path):
    write(tmp_path, 'extends = "b.toml"\n', "a.toml")
    write(tmp_path, 'extends = "a.toml"\n', "b.toml")
    with pytest.raises(ConfigError, match="loops back"):
        load_config(Run, tmp_path / "a.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(Run, write(tmp_path, "lr = = 1\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_config(Run, tmp_path / "missing.toml")


def test_resolved_config_round_trips_through_toml(tmp_path):
    run = load_config(Run, write(tmp_path, ""), ["model.quantizer.size=1024", "steps=7"])
    again = load_config(Run, write(tmp_path, dumps_toml(run), "resolved.toml"))
    assert again == run
    assert structure(Run, {}) == Run()


@attrs.frozen(kw_only=True)
class Section:
    size: int = 1


@attrs.frozen(kw_only=True)
class WithOptional:
    metric: Section | None = Section()
    note: str | None = None


def test_false_switches_an_optional_section_off_and_round_trips(tmp_path):
    off = load_config(WithOptional, write(tmp_path, "metric = false\n"))
    assert off.metric is None
    assert load_config(WithOptional, write(tmp_path, dumps_toml(off), "again.toml")) == off
    assert load_config(WithOptional, write(tmp_path, "[metric]\nsize = 3\n", "on.toml")).metric == Section(size=3)


def test_overriding_a_component_name_drops_the_old_components_options(tmp_path):
    base = write(tmp_path, '[model.quantizer]\nsize = 512\n', "base.toml")
    run = load_config(Run, base, ['model.quantizer.name="lookup"'])
    assert run.model.quantizer == ComponentChoice("lookup", Lookup.Config())


@attrs.frozen(kw_only=True)
class Metric:
    label: str = "rfid"
    extractor: str = "auto"


@attrs.frozen(kw_only=True)
class Generation:
    fid: Metric = Metric(label="gfid")
    score: Metric | None = Metric(label="is")


def test_a_partial_table_keeps_the_fields_default_instance_values(tmp_path):
    run = load_config(Generation, write(tmp_path, '[fid]\nextractor = "standin"\n[score]\nextractor = "x"\n'))
    assert run.fid == Metric(label="gfid", extractor="standin")
    assert run.score == Metric(label="is", extractor="x")


# -- values checked at load (issues 10.4, 13) ----------------------------------------------

TINY = Path(__file__).resolve().parent / "configs" / "tiny-glotok.toml"


@pytest.fixture()
def installed_plugins():
    """The installed (built-in) components instead of this module's test registry."""
    from glotok_bench.registry import build_registry

    with using_registry(build_registry()) as registry:
        yield registry


@pytest.mark.parametrize("override, key", [
    ("loss.semantic_weight=nan", "loss.semantic_weight"),
    ("loss.residual_weight=inf", "loss.residual_weight"),
    ("train.lr=nan", "train.lr"),
    ("train.grad_clip=-inf", "train.grad_clip"),
    ("tokenizer.quantizer.semantic_size=0", "tokenizer.quantizer.semantic_size"),
    ("tokenizer.quantizer.code_dim=-4", "tokenizer.quantizer.code_dim"),
])
def test_bad_numbers_fail_at_load_naming_the_key_and_the_override(override, key, installed_plugins):
    from glotok_bench.runconfig import RunConfig

    with pytest.raises(ConfigError) as error:
        load_config(RunConfig, TINY, [override])
    (line,) = [line for line in str(error.value).splitlines() if key in line]
    assert line.strip().startswith(f"--set {override}: {key}: must be")


def test_errors_in_the_file_are_still_reported_against_the_file(tmp_path, installed_plugins):
    path = tmp_path / "c.toml"
    path.write_text("[train]\nlr = nan\n")
    from glotok_bench.runconfig import RunConfig

    with pytest.raises(ConfigError, match=rf"{path}: train.lr: must be a finite number, got nan"):
        load_config(RunConfig, path, ["train.seed=3"])


def test_a_config_file_that_is_not_utf8_is_one_line_naming_it(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('name = "café"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=rf"^{path}: not a UTF-8 text file \(byte 0xe9 at offset 11\)"):
        load_config(Codebook.Config, path)


@attrs.frozen
class Schedule:
    warmup: float = attrs.field(default=0.0, validator=validators.non_negative)
    decay: float = attrs.field(default=0.5, validator=validators.unit_interval)


@attrs.frozen
class Outer:
    schedule: Schedule = Schedule()


def test_shared_validators_name_the_field_at_its_full_path():
    with pytest.raises(ConfigError, match=r"schedule.decay: must be in \[0, 1\], got 1.5"):
        structure(Outer, {"schedule": {"decay": 1.5}})
    with pytest.raises(ValueError, match="warmup must be a finite number"):
        Schedule(warmup=float("nan"))  # configs built in code are checked too



def test_importing_the_run_config_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, glotok_bench.runconfig; print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
