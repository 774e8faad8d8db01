"""Importing an app's modules so their decorators register (Faust's ``autodiscover``)."""
from __future__ import annotations

import importlib
import os
import pkgutil
from typing import List, Sequence

from .exceptions import ConfigurationError

__all__ = ["import_modules", "django_modules"]


def django_modules() -> List[str]:
    """The Django apps to discover too (Faust's Django fixup), set up first.

    With ``DJANGO_SETTINGS_MODULE`` set and Django installed, Django is set
    up (``django.setup()``) and the names of the project's installed apps
    (``INSTALLED_APPS``) are returned, as Faust's ``autodiscover=True`` scans
    them; otherwise none.
    """
    if not os.environ.get("DJANGO_SETTINGS_MODULE"):
        return []
    try:
        import django
    except ImportError:
        return []
    django.setup()
    from django.apps import apps
    return [config.name for config in apps.get_app_configs()]


def import_modules(packages: Sequence[str]) -> List[str]:
    """Import each package and every module below it; the names imported, in order."""
    imported: List[str] = []
    for name in packages:
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"autodiscover: {name!r} is not a module name")
        module = _import(name, name)
        imported.append(name)
        path = getattr(module, "__path__", None)
        if path is None:  # a plain module: nothing below it
            continue
        errors: List[str] = []
        for info in pkgutil.walk_packages(path, prefix=f"{name}.", onerror=errors.append):
            if info.name.rsplit(".", 1)[-1].startswith("_") and not info.ispkg:
                continue  # private modules (__main__, _internal) are not scanned
            _import(info.name, name)
            imported.append(info.name)
        if errors:
            raise ConfigurationError(f"autodiscover {name!r}: importing {errors[0]!r} failed")
    return imported


def _import(module: str, package: str) -> object:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            raise ConfigurationError(f"autodiscover {package!r}: no module named {module!r}") from None
        raise ConfigurationError(f"autodiscover {package!r}: importing {module!r} failed: {exc}") from None
    except ConfigurationError:
        raise
    except Exception as exc:
        raise ConfigurationError(f"autodiscover {package!r}: importing {module!r} raised "
                                 f"{type(exc).__name__}: {exc}") from None
