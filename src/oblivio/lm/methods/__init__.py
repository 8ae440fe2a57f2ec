"""Unlearning methods for causal LMs, one file each, behind their own registry (``LM_METHODS``).

A method subclasses ``LMUnlearner`` (``base.py``) and is decorated with ``@register``; every module here is
imported below so that registering is adding a file.
"""
from __future__ import annotations

import importlib
import pkgutil

from .base import LM_METHODS, LMUnlearnData, LMUnlearner, get_lm_method, register, unlearn_lm

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name != "base":
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["LM_METHODS", "LMUnlearnData", "LMUnlearner", "get_lm_method", "register", "unlearn_lm"]
