"""Unlearning methods, one module each, all registered in ``base``; plug-ins come from the ``oblivio.methods``
entry-point group, loaded on the registry's first use (``load_plugins``)."""
import importlib
import pkgutil

from .base import UnlearnData, Unlearner, UnlearnResult, available_methods, get_method, load_plugins, register

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name not in ("base", "common"):
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["UnlearnData", "Unlearner", "UnlearnResult", "available_methods", "get_method", "load_plugins", "register"]
