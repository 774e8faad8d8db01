"""Faust's ``__faust`` namespace: which Record class a serialized value names.

Every concrete Record class is registered under its namespace (by default
``module.QualifiedName``, as Faust's ``canoname``), and Faust writes it into
each value as ``{"__faust": {"ns": "..."}}``. When reading, the namespace
picks the class only where Faust lets it (the rule of Faust's
``Model._maybe_namespace``):

* with no type asked for, or an abstract one, the value must name a
  registered class, else it is refused (``UnknownNamespace``);
* with a concrete type, the named class is used only if that type allows it
  (``allow_blessed_key=True`` or ``polymorphic_fields=True``); otherwise,
  and when the name is unknown, the asked type is used. So a Sabot class and
  a Faust class of another module (another namespace) still share a topic.

Only classes defined in the process can be named: unlike pickle, a
namespace can never make the reader import or build anything else.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Optional, Set, Type

if TYPE_CHECKING:
    from .record import Record

__all__ = ["registry", "blessed", "BLESSED_KEY", "UnknownNamespace", "model_named_by", "namespace_of"]

#: The key that holds the namespace in a serialized value.
BLESSED_KEY = "__faust"

#: namespace -> Record class, filled as classes are defined.
registry: Dict[str, Type["Record"]] = {}
#: Namespaces of the classes that a value's ``__faust`` may pick over the
#: type asked for (``allow_blessed_key``/``polymorphic_fields``).
blessed: Set[str] = set()


class UnknownNamespace(KeyError):
    """A value names a namespace that no Record class in this process has."""

    def __init__(self, namespace: Any) -> None:
        super().__init__(namespace)
        self.namespace = namespace

    def __str__(self) -> str:
        return f"unknown __faust namespace {self.namespace!r}: no Record class has it"


def namespace_of(data: Any) -> Optional[Any]:
    """The namespace named in ``data`` (``None`` when it names none)."""
    if type(data) is not dict:
        return None
    meta = data.get(BLESSED_KEY)
    if type(meta) is not dict:
        return None
    return meta.get("ns")


def model_named_by(data: Any, preferred: Optional[Type["Record"]]) -> Optional[Type["Record"]]:
    """The class ``data`` names, where Faust would use it; ``None``: use ``preferred``.

    Raises ``UnknownNamespace`` where Faust refuses the value (no concrete
    type asked for and the name is unknown or not a string).
    """
    ns = namespace_of(data)
    if ns is None:
        return None
    abstract = preferred is None or preferred.__is_abstract__
    model = registry.get(ns) if isinstance(ns, str) else None
    if model is None:
        if abstract:
            raise UnknownNamespace(ns)
        return None
    if abstract:
        if preferred is not None and not issubclass(model, preferred):
            # An abstract base accepts its own subclasses only.
            raise UnknownNamespace(ns)
        return model
    options = model._options
    if options.allow_blessed_key or options.polymorphic_fields:
        return model
    return None
