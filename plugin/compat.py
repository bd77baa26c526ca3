"""Running third-party tools next to medmeta here: those that import torchvision, which has no CPU build.

The peer libraries (learn2learn, easyfsl) and MONAI Label import torchvision at import time
although nothing medmeta uses from them needs it. :func:`torchvision_placeholder` lets them
import: when torchvision is missing, ``torchvision`` and every submodule resolve to empty
modules whose attributes are placeholders that raise when used. Only benchmarks and the MONAI
Label launcher call it; medmeta itself never imports torchvision.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types


class _Placeholder:
    def __init__(self, *args, **kwargs):
        raise RuntimeError("torchvision is not installed here; this part of a third-party library is unavailable")


class _PlaceholderFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves empty ``torchvision`` modules."""

    def find_spec(self, name, path=None, target=None):
        if name == "torchvision" or name.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []

        def attribute(name: str):
            if name.startswith("__"):
                raise AttributeError(name)
            return _Placeholder

        module.__getattr__ = attribute
        return module

    def exec_module(self, module):
        pass


def torchvision_placeholder() -> bool:
    """Make ``import torchvision`` succeed with placeholders when it is not installed; True if it did."""
    if importlib.util.find_spec("torchvision") is not None:
        return False
    if not any(isinstance(f, _PlaceholderFinder) for f in sys.meta_path):
        sys.meta_path.append(_PlaceholderFinder())
    return True
