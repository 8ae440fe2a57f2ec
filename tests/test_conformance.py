"""The conformance suite: every registered method passes ``oblivio.testing.check_unlearner`` (a new method
is checked by adding its file), the checks catch what they claim to, and plug-in methods load from the
``oblivio.methods`` entry-point group."""
from __future__ import annotations

import copy
import importlib
import sys
import textwrap
import time
import warnings
from dataclasses import dataclass

import pytest
import torch

from oblivio import OblivioError
from oblivio.methods import Unlearner, available_methods, base, get_method
from oblivio.methods.base import UnlearnResult
from oblivio.testing import CHECKS, check_unlearner


@pytest.mark.parametrize("method", available_methods())
def test_method_conforms(method):
    check_unlearner(method)


class Shrink(Unlearner):
    """A test-only method: scale every weight by 0.99."""

    name = "test-shrink"

    @dataclass
    class Config:
        factor: float = 0.99

    def run(self, model, data):
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(self.config.factor)
        return {"steps": 1}


class MutatesInput(Shrink):
    def unlearn(self, model, data, *, amp=None):
        with torch.no_grad():
            next(model.parameters()).add_(1)
        return super().unlearn(model, data, amp=amp)


class Nondeterministic(Shrink):
    def run(self, model, data):
        noise = torch.Generator().manual_seed(time.perf_counter_ns())
        with torch.no_grad():
            next(model.parameters()).add_(torch.randn(1, generator=noise))


class TensorInInfo(Shrink):
    def run(self, model, data):
        super().run(model, data)
        return {"loss": torch.tensor(1.0)}


class SkipsTheFramework(Shrink):
    """Bypasses ``Unlearner.unlearn``, so a collapse goes unwarned."""

    def unlearn(self, model, data, *, amp=None):
        work = copy.deepcopy(model)
        self.run(work, data)
        return UnlearnResult(work, self.name, {}, 0.0, {})


class FailsOnOneSample(Shrink):
    def run(self, model, data):
        if len(data.forget) == 1:
            raise ValueError("boom")
        return super().run(model, data)


def test_an_unregistered_class_passes_and_leaves_the_registry_as_it_was():
    check_unlearner(Shrink)
    assert "test-shrink" not in available_methods()


@pytest.mark.parametrize("cls, check, says", [
    (MutatesInput, "input_untouched", "the input model was modified"),
    (Nondeterministic, "deterministic", "different weights"),
    (TensorInInfo, "info", "not plain JSON"),
    (SkipsTheFramework, "collapse_warned", "no warning"),
    (FailsOnOneSample, "forget_sizes", "ValueError: boom"),
])
def test_a_failing_check_is_named(cls, check, says):
    with pytest.raises(AssertionError, match=f"method 'test-shrink' failed check '{check}': .*{says}"):
        check_unlearner(cls)


def test_checks_can_be_chosen():
    check_unlearner("ft", checks=["options", "device"])
    with pytest.raises(ValueError, match="unknown checks"):
        check_unlearner("ft", checks=["nope"])
    assert set(CHECKS) == {"options", "input_untouched", "deterministic", "device", "forget_sizes", "info",
                           "collapse_warned"}


# -- plug-ins ------------------------------------------------------------------------------------------------

PLUGIN = '''
from dataclasses import dataclass

import torch
from oblivio.methods import Unlearner


class Damp(Unlearner):
    """Scale every weight by ``factor`` (a plug-in test method)."""

    name = "damp-plugin"
    paper = "none: a test plug-in"

    @dataclass
    class Config:
        factor: float = 0.9

    def run(self, model, data):
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(self.config.factor)
        return {"steps": 1}
'''


def install(root, dist: str, entry_points: str, modules: dict[str, str]) -> None:
    """A distribution as pip leaves it: its modules and a ``<dist>-0.1.dist-info`` with METADATA and entry points."""
    for name, source in modules.items():
        (root / f"{name}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[oblivio.methods]\n{entry_points}\n")


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A fresh site directory on sys.path and a registry that loads plug-ins again, both undone afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(base, "_METHODS", dict(base._METHODS))
    monkeypatch.setattr(base, "_BROKEN_PLUGINS", {})
    monkeypatch.setattr(base, "_LOADED_PLUGINS", set())
    monkeypatch.setattr(base, "_plugins_loaded", False)
    before = set(sys.modules)
    importlib.invalidate_caches()
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.startswith("oblivio_test_plugin"):
            del sys.modules[name]


def test_a_plugin_method_is_listed_run_and_conforms(site, cli):
    install(site, "oblivio_test_plugin", "damp-plugin = oblivio_test_plugin:Damp", {"oblivio_test_plugin": PLUGIN})
    assert "damp-plugin" in available_methods()
    code, out, err = cli("methods")
    assert code == 0 and "damp-plugin  (needs: nothing but the forget set)" in out and "a test plug-in" in out
    assert get_method("damp-plugin", factor=0.5).config.factor == 0.5
    check_unlearner("damp-plugin")


def test_a_plugin_module_registers_its_methods(site):
    source = PLUGIN.replace("from oblivio.methods import Unlearner", "from oblivio.methods import Unlearner, register")
    install(site, "oblivio_test_plugin_mod", "damp-plugin = oblivio_test_plugin_mod",
            {"oblivio_test_plugin_mod": source.replace("\nclass Damp", "\n@register\nclass Damp")})
    assert "damp-plugin" in available_methods()


def test_a_broken_plugin_is_one_line_and_spares_the_others(site):
    install(site, "oblivio_test_plugin_broken", "broken-plugin = oblivio_test_plugin_broken:Missing",
            {"oblivio_test_plugin_broken": "raise ImportError('needs a package that is not installed')\n"})
    with pytest.warns(RuntimeWarning, match="plug-in method 'broken-plugin'") as caught:
        names = available_methods()
    assert "broken-plugin" not in names and "dm" in names
    assert len(caught) == 1 and "\n" not in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # loaded once: no second warning
        with pytest.raises(OblivioError, match=r"^plug-in method 'broken-plugin' \(oblivio_test_plugin_broken:Missing\) "
                                               r"failed to load: ImportError: needs a package that is not installed$"):
            get_method("broken-plugin")


def test_a_plugin_may_not_take_a_builtin_name(site):
    install(site, "oblivio_test_plugin_dup", "dm = oblivio_test_plugin_dup:Damp",
            {"oblivio_test_plugin_dup": PLUGIN.replace('"damp-plugin"', '"dm"')})
    with pytest.warns(RuntimeWarning, match="registered twice"):
        assert "dm" in available_methods()
    assert get_method("dm").name == "dm" and type(get_method("dm")).__module__ == "oblivio.methods.dm"
