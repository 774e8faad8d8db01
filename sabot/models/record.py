"""``Record``: Faust's record model, with the same class options and methods.

::

    class Order(sabot.Record, validation=True):
        id: str
        amount: Decimal
        placed: datetime
        lines: List[Line] = []
        note: Optional[str] = None

Fields come from the annotations (a subclass adds to its parents'); a class
attribute is the field's default, or a ``FieldDescriptor`` that sets its
options. ``__init__`` takes the fields by position or name, as Faust's.
``from_data(dict)`` builds a record from decoded data (nested records too),
``asdict()`` gives the fields, ``to_representation()`` adds Faust's
``{"__faust": {"ns": ...}}``, ``dumps()``/``loads()`` write and read it.

Class options (Faust's): ``serializer``, ``namespace``, ``include_metadata``,
``isodates``, ``decimals``, ``coerce``, ``coercions``, ``validation``,
``date_parser``, ``allow_blessed_key``, ``polymorphic_fields``,
``abstract``, ``lazy_creation``. ``Record.arrow_schema()`` maps the class to
an Arrow schema (``sabot.models.arrow``).

Like Faust, ``__init__`` and the decoder are generated once per class, so
building a record costs about what a hand-written class costs.
"""
from __future__ import annotations

import typing
from datetime import datetime
from typing import (Any, Callable, ClassVar, Dict, Iterator, List, Mapping, Optional, Tuple,
                    Type, TypeVar, cast)

from ..exceptions import ConfigurationError, ValidationError
from .conversion import converter_for, is_optional
from .fields import FieldDescriptor, field_for_type
from .namespace import BLESSED_KEY, blessed, model_named_by, registry

__all__ = ["Record", "ModelOptions", "MissingField"]

R = TypeVar("R", bound="Record")

_OPTION_NAMES = ("serializer", "include_metadata", "isodates", "decimals", "coerce",
                 "validation", "date_parser", "allow_blessed_key", "polymorphic_fields")


class MissingField(TypeError):
    """Data for a record lacks a required field (a ``TypeError``, as in Faust)."""

    def __init__(self, model: str, field: str) -> None:
        super().__init__(f"{model}: required field {field!r} is missing")
        self.model = model
        self.field = field


class ModelOptions:
    """A Record class's options and field indexes (``Model._options``), as Faust's."""

    serializer: Optional[Any] = None
    namespace: str = ""
    include_metadata: bool = True
    polymorphic_fields: bool = False
    allow_blessed_key: bool = False
    isodates: bool = False
    decimals: bool = False
    validation: bool = False
    coerce: bool = False
    date_parser: Optional[Callable[[Any], Any]] = None

    def __init__(self) -> None:
        self.coercions: Dict[Any, Callable[[Any], Any]] = {}
        #: field name -> annotation, in order (parents' fields first).
        self.fields: Dict[str, Any] = {}
        self.fieldset: frozenset[str] = frozenset()
        #: position -> field name (``__init__``'s positional arguments).
        self.fieldpos: Dict[int, str] = {}
        #: field name -> default, for the fields that have one.
        self.defaults: Dict[str, Any] = {}
        self.optionalset: frozenset[str] = frozenset()
        #: field name -> its FieldDescriptor.
        self.descriptors: Dict[str, FieldDescriptor] = {}

    def clone_defaults(self) -> "ModelOptions":
        """A new options object with the class options (not the fields) copied."""
        new = ModelOptions()
        for name in _OPTION_NAMES:
            setattr(new, name, getattr(self, name))
        new.coercions = dict(self.coercions)
        return new


class Record:
    """A record: typed fields, Faust's JSON layout, Arrow inside. See the module."""

    __is_abstract__: ClassVar[bool] = True
    __is_model__: ClassVar[bool] = True
    _options: ClassVar[ModelOptions] = ModelOptions()
    _blessed_key: ClassVar[str] = BLESSED_KEY
    _pending_finalizers: ClassVar[Optional[List[Callable[[], None]]]] = None
    # Generated per class (``_finalize``): data -> record, without ``__init__``.
    _from_dict: ClassVar[Callable[[Any], Any]]
    _arrow: ClassVar[Any] = None

    def __init_subclass__(cls, serializer: Optional[Any] = None, namespace: Optional[str] = None,
                          include_metadata: Optional[bool] = None,
                          isodates: Optional[bool] = None, abstract: bool = False,
                          allow_blessed_key: Optional[bool] = None,
                          decimals: Optional[bool] = None, coerce: Optional[bool] = None,
                          coercions: Optional[Mapping[Any, Callable[[Any], Any]]] = None,
                          polymorphic_fields: Optional[bool] = None,
                          validation: Optional[bool] = None,
                          date_parser: Optional[Callable[[Any], Any]] = None,
                          lazy_creation: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        given = dict(serializer=serializer, include_metadata=include_metadata,
                     isodates=isodates, allow_blessed_key=allow_blessed_key,
                     decimals=decimals, coerce=coerce, polymorphic_fields=polymorphic_fields,
                     validation=validation, date_parser=date_parser)

        def finalize() -> None:
            _finalize(cls, given, namespace, abstract, coercions)
        if lazy_creation:
            cls._pending_finalizers = [finalize]
        else:
            cls._pending_finalizers = None
            finalize()

    @classmethod
    def make_final(cls) -> None:
        """Finish a class defined with ``lazy_creation=True`` (its forward
        references can be resolved now)."""
        pending, cls._pending_finalizers = cls._pending_finalizers, None
        for finalizer in pending or ():
            finalizer()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Replaced by a generated __init__ on every concrete class.
        raise TypeError(f"cannot create an instance of the abstract model "
                        f"{type(self).__name__}")

    # -- reading data --------------------------------------------------------
    @classmethod
    def from_data(cls: Type[R], data: Any, *,
                  preferred_type: Optional[Type["Record"]] = None) -> R:
        """A record from decoded data (a dict), nested records and all.

        The data's ``__faust`` namespace may pick another class, where Faust
        lets it (``sabot.models.namespace``). Raises ``MissingField`` (a
        ``TypeError``) for a missing required field, ``ValidationError`` (a
        ``ValueError``) for a value that does not fit under ``validation``,
        ``TypeError``/``ValueError`` for data that is not a dict of fields.
        """
        if type(data) is dict and not blessed and not cls.__is_abstract__ and (
                preferred_type is None or preferred_type is cls):
            # The common case: no namespace can pick another class (see
            # model_named_by), so the data's __faust is not even read.
            target: Type[Record] = cls
        else:
            if isinstance(data, Record):
                return cast(R, data)
            if not isinstance(data, Mapping):
                raise TypeError(f"{cls.__name__} needs a JSON object (dict), "
                                f"got {type(data).__name__}")
            model = model_named_by(data, preferred_type if preferred_type is not None else cls)
            target = model if model is not None else cls
        if target.__is_abstract__:
            raise TypeError(f"{target.__name__} is abstract: the value must name one of its "
                            f"subclasses in __faust")
        try:
            return cast(R, target._from_dict(data))
        except (MissingField, ValidationError, RecursionError):
            raise
        except (TypeError, ValueError, ArithmeticError) as exc:
            raise _explain(target, data, exc) from exc

    @classmethod
    def _from_data_field(cls, data: Any) -> Any:
        # A nested field's value: Faust's Model._from_data_field.
        return cls.from_data(data, preferred_type=None if cls.__is_abstract__ else cls)

    @classmethod
    def loads(cls: Type[R], s: bytes, *, serializer: Optional[Any] = None,
              default_serializer: Optional[Any] = None) -> R:
        """A record from bytes written by ``dumps`` (or by Faust)."""
        from .json_layout import loads_data
        codec = cls._options.serializer or serializer or default_serializer or "json"
        return cls.from_data(loads_data(codec, s))

    # -- writing -------------------------------------------------------------
    def asdict(self) -> Dict[str, Any]:
        """The fields as a dict (by output name; nested records stay records)."""
        d = self.__dict__
        return {out: d.get(name) for name, out in self._output_fields()}

    @classmethod
    def _output_fields(cls) -> List[Tuple[str, str]]:
        return cls._options.__dict__["_output"]

    def to_representation(self) -> Dict[str, Any]:
        """``asdict()`` plus Faust's ``__faust`` namespace (when ``include_metadata``)."""
        payload = self.asdict()
        options = self._options
        if options.include_metadata:
            payload[BLESSED_KEY] = {"ns": options.namespace}
        return payload

    def dumps(self, *, serializer: Optional[Any] = None) -> Any:
        """The record written with ``serializer`` (or the class's; with neither,
        the representation itself, as in Faust)."""
        codec = serializer or self._options.serializer
        if not codec:
            return self.to_representation()
        from .json_layout import dumps_data
        return dumps_data(codec, self)

    def __json__(self) -> Any:
        return self.to_representation()

    # -- checks ----------------------------------------------------------------
    def validate(self) -> List[ValidationError]:
        """Every field's problems (an empty list when the record is valid)."""
        d = self.__dict__
        errors: List[ValidationError] = []
        for name, descr in self._options.descriptors.items():
            errors.extend(descr.validate_all(d.get(name)))
        return errors

    def validate_or_raise(self) -> None:
        """Raise the first ``ValidationError``, if any."""
        errors = self.validate()
        if errors:
            raise errors[0]

    def is_valid(self) -> bool:
        """True when ``validate()`` finds nothing."""
        return not self.validate()

    @property
    def validation_errors(self) -> List[ValidationError]:
        """``validate()``."""
        return self.validate()

    def derive(self: R, *objects: "Record", **fields: Any) -> R:
        """A copy with the fields of ``objects`` and ``fields`` changed."""
        data = self.asdict()
        for obj in objects:
            data.update(obj.asdict())
        data.update(fields)
        return type(self)(**data)

    # -- Arrow -------------------------------------------------------------------
    @classmethod
    def arrow_schema(cls) -> Any:
        """The ``pyarrow.Schema`` of this class (see ``sabot.models.arrow``)."""
        from .arrow import schema_for
        return schema_for(cls)

    @classmethod
    def to_batch(cls, records: typing.Sequence[Any]) -> Any:
        """``records`` (of this class, or dicts of its fields) as one ``pyarrow.RecordBatch``."""
        from .arrow import records_to_batch
        return records_to_batch(cls, records)

    # -- comparison and display ------------------------------------------------
    def _values(self) -> Tuple[Any, ...]:
        d = self.__dict__
        return tuple(d.get(name) for name in self._options.fields)

    def __eq__(self, other: Any) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()

    def __ne__(self, other: Any) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._values() != other._values()

    def __lt__(self, other: Any) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._values() < other._values()

    def __le__(self, other: Any) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._values() <= other._values()

    def __gt__(self, other: Any) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._values() > other._values()

    def __ge__(self, other: Any) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._values() >= other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        d = self.__dict__
        shown = ", ".join(f"{name}={d.get(name)!r}" for name in self._options.fields)
        return f"<{type(self).__name__}: {shown}>"


# -- building a class --------------------------------------------------------------

def _finalize(cls: Type[Record], given: Mapping[str, Any], namespace: Optional[str],
              abstract: bool, coercions: Optional[Mapping[Any, Callable[[Any], Any]]]) -> None:
    parent: ModelOptions = cls.__dict__.get("_options") or cls._options
    options = parent.clone_defaults()
    custom = cls.__dict__.get("Options")
    if custom is not None:  # Faust's ``class Options:`` inside the record
        for name, value in vars(custom).items():
            if not name.startswith("_"):
                setattr(options, name, value)
        delattr(cls, "Options")
    for name, value in given.items():
        if value is not None:
            setattr(options, name, value)
    if given.get("validation"):
        options.coerce = True  # validation implies coerce (Faust)
    if coercions:
        options.coercions.update(coercions)
    options.namespace = namespace or f"{cls.__module__}.{cls.__qualname__}"
    if abstract:
        cls.__is_abstract__ = True
        cls._options = options
        return
    cls.__is_abstract__ = False
    _collect_fields(cls, options)
    options.descriptors = _make_descriptors(cls, options)
    options.__dict__["_output"] = [(name, d.output_name)
                                   for name, d in options.descriptors.items() if not d.exclude]
    cls._options = options
    cls._arrow = None
    registry[options.namespace] = cls
    if options.allow_blessed_key or options.polymorphic_fields:
        blessed.add(options.namespace)
    else:
        blessed.discard(options.namespace)
    init, from_dict = _generate(cls, options)
    if "__init__" not in cls.__dict__:
        cls.__init__ = init  # type: ignore[method-assign]
        cls._from_dict = from_dict
    else:  # the user wrote __init__: data goes through it, as in Faust
        def through_init(data: Any) -> Any:
            return cls(**{str(k): v for k, v in data.items()}, __strict__=False)
        cls._from_dict = through_init
        options.__dict__["_from_typed"] = None  # no shortcut past the user's __init__
        options.__dict__["_typed_names"] = None
    if options.coerce:
        cls.__setattr__ = _coercing_setattr  # type: ignore[method-assign,assignment]


def _collect_fields(cls: Type[Record], options: ModelOptions) -> None:
    try:
        hints = typing.get_type_hints(cls, localns={cls.__name__: cls})
    except NameError as exc:
        raise ConfigurationError(
            f"Record {cls.__qualname__}: cannot resolve a field's type ({exc}); for a type "
            f"defined later, use lazy_creation=True and call make_final() once it exists"
        ) from None
    names: List[str] = []
    for klass in reversed(cls.__mro__):
        if klass is Record or not (isinstance(klass, type) and issubclass(klass, Record)):
            continue
        for name in klass.__dict__.get("__annotations__", {}):
            if name not in names and typing.get_origin(hints.get(name)) is not ClassVar \
                    and hints.get(name) is not ClassVar:
                names.append(name)
    fields = {name: hints[name] for name in names}
    defaults: Dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if not (isinstance(klass, type) and issubclass(klass, Record)) or klass is Record:
            continue
        for name, value in klass.__dict__.items():
            if name not in fields:
                continue
            if isinstance(value, FieldDescriptor):
                if value.required:
                    defaults.pop(name, None)
                else:
                    defaults[name] = value.default
            else:
                defaults[name] = value
    # Faust (and dataclasses): a field without a default cannot follow one.
    seen_default: List[str] = []
    for name in cls.__dict__.get("__annotations__", {}):
        if name not in fields:
            continue
        value = cls.__dict__.get(name, _MISSING)
        has_default = value is not _MISSING and not (
            isinstance(value, FieldDescriptor) and value.required)
        if has_default:
            seen_default.append(name)
        elif seen_default and value is _MISSING:
            raise TypeError(f"Non-default {cls.__name__} field {name} cannot follow default "
                            f"field(s) {', '.join(seen_default)}")
    for name, typ in fields.items():
        if is_optional(typ):
            defaults.setdefault(name, None)
    options.fields = fields
    options.fieldset = frozenset(fields)
    options.fieldpos = dict(enumerate(fields))
    options.defaults = defaults
    options.optionalset = frozenset(defaults)


_MISSING = object()


def _make_descriptors(cls: Type[Record], options: ModelOptions) -> Dict[str, FieldDescriptor]:
    out: Dict[str, FieldDescriptor] = {}
    for name, typ in options.fields.items():
        required = name not in options.defaults
        default = options.defaults.get(name)
        given = getattr(cls, name, None)
        common = dict(field=name, type=typ, model=cls, required=required, default=default,
                      coerce=options.coerce, date_parser=options.date_parser)
        if isinstance(given, FieldDescriptor):
            descr = given.clone(**common)
        else:
            from .conversion import strip_optional
            descr = field_for_type(strip_optional(typ))(**common)
        setattr(cls, name, descr)
        out[name] = descr
    return out


def _to_python(descr: FieldDescriptor, options: ModelOptions) -> Optional[Callable[[Any], Any]]:
    """How one field's value read from data is converted (None: as it is)."""
    typ = descr.type
    user = options.coercions.get(typ)
    if user is not None:
        return user
    convert = converter_for(typ, options, top=True)
    from .fields import DatetimeField, DecimalField, parse_datetime, to_datetime, to_decimal
    coerce = options.coerce or (isinstance(descr, DatetimeField) and options.isodates) or (
        isinstance(descr, DecimalField) and options.decimals)
    if not coerce or type(descr).prepare_value is FieldDescriptor.prepare_value:
        return convert
    if convert is None and type(descr) is DecimalField:
        return to_decimal  # what prepare_value(v, coerce=True) does, one call less
    if convert is None and type(descr) is DatetimeField:
        parse = descr.date_parser
        if parse is parse_datetime:
            return to_datetime  # known to the whole-fetch parser, which converts a column at once
        return lambda v: v if v is None or isinstance(v, datetime) else parse(v)
    prepare = descr.prepare_value
    if convert is None:
        return lambda v: prepare(v, coerce=True)
    return lambda v: prepare(convert(v), coerce=True)


def _generate(cls: Type[Record], options: ModelOptions) -> Tuple[Callable[..., None],
                                                                 Callable[[Any], Any]]:
    """``__init__`` and the data decoder, as source compiled once per class.

    Generated (like Faust's) so that building a record is a run of plain
    assignments into ``__dict__``, without a loop over fields or a
    descriptor call per field.
    """
    ns: Dict[str, Any] = {"_MissingField": MissingField, "_model": cls,
                          "_new": object.__new__, "_NO": _MISSING}
    required = [n for n in options.fields if n not in options.optionalset]
    optional = [n for n in options.fields if n in options.optionalset]
    strict: List[str] = []
    loose: List[str] = []
    data: List[str] = []
    plain = _plain_setattr(cls, options)
    # Stored as attributes, a plain class's values stay in the instance's
    # inline slots: no dict object until someone asks for __dict__ (one
    # allocation less per record, and half the garbage collector's work).
    own_dict = "" if plain else "    _s_d = _s_self.__dict__"
    the_dict = "_s_self.__dict__" if plain else "_s_d"

    def into(name: str) -> str:
        return f"_s_self.{name}" if plain else f"_s_d[{name!r}]"
    input_names = set()
    for name in options.fields:
        descr = options.descriptors[name]
        input_names.add(descr.input_name)
        conv = _to_python(descr, options)
        if conv is not None:
            ns[f"_conv_{name}"] = conv
            options.__dict__.setdefault("_to_python", {})[name] = conv
        prep = descr.prepare_value if options.coerce and type(descr).prepare_value \
            is not FieldDescriptor.prepare_value else None
        if prep is not None:
            ns[f"_prep_{name}"] = prep
        got_s = f"_prep_{name}({name})" if prep is not None else name
        got_l = f"_conv_{name}({name})" if conv is not None else name
        got_d = f"_conv_{name}(_s_v)" if conv is not None else "_s_v"
        key = repr(descr.input_name)
        if name in options.optionalset:
            ns[f"_default_{name}"] = options.defaults[name]
            strict.append(f"        {into(name)} = {got_s} if {name} is not None "
                          f"else _default_{name}")
            loose.append(f"        {into(name)} = {got_l} if {name} is not None "
                         f"else _default_{name}")
            data.append(f"    _s_v = _s_data.get({key})")
            data.append(f"    {into(name)} = {got_d} if _s_v is not None else _default_{name}")
        else:
            strict.append(f"        {into(name)} = {got_s}")
            loose.append(f"        {into(name)} = {got_l}")
            data.append(f"    _s_v = _s_data.get({key}, _NO)")
            data.append("    if _s_v is _NO:")
            data.append(f"        raise _MissingField(_model.__name__, {descr.input_name!r})")
            data.append(f"    {into(name)} = {got_d}")
    post: List[str] = []
    if hasattr(cls, "__post_init__"):
        post.append("    _s_self.__post_init__()")
    if options.validation:
        post.append("    _s_self.validate_or_raise()")
    ns["_input_names"] = frozenset(input_names) | {BLESSED_KEY}
    ns["_reserved"] = frozenset(dir(cls))
    signature = ", ".join(["_s_self"] + required + [f"{n}=None" for n in optional]
                          + ["*", "__strict__=True", "__faust=None", "**_s_kwargs"])
    init_src = "\n".join([
        f"def __init__({signature}):",
        own_dict,
        "    if __strict__:",
        *(strict or ["        pass"]),
        "        if _s_kwargs:",
        "            raise TypeError('{} got unexpected argument(s): {}'.format(",
        "                type(_s_self).__name__, ', '.join(map(str, sorted(_s_kwargs)))))",
        "    else:",
        *(loose or ["        pass"]),
        "        if _s_kwargs:",
        f"            _extra({the_dict}, _s_kwargs)",
        *post,
    ])
    # From the final value of every field, in order: a parsed fetch's columns,
    # converted and defaulted column by column (sabot.models.fast_json).
    params = [f"_f_{name}" for name in options.fields]
    # Which attributes _from_typed stores and nothing else (the compiled
    # build_records then makes the records itself); None when it does more.
    options.__dict__["_typed_names"] = tuple(options.fields) if plain and not post else None
    typed_src = "\n".join([
        f"def _from_typed({', '.join(params)}):",
        "    _s_self = _new(_model)",
        own_dict,
        *(f"    {into(name)} = {param}" for name, param in zip(options.fields, params)),
        *post,
        "    return _s_self",
    ])
    data_src = "\n".join([
        "def _from_dict(_s_data):",
        "    _s_self = _new(_model)",
        own_dict,
        *data,
        "    if not _s_data.keys() <= _input_names:",
        f"        _extra({the_dict}, _s_data)",
        *post,
        "    return _s_self",
    ])
    ns["_extra"] = _keep_extra(ns["_input_names"], ns["_reserved"])
    exec(compile(init_src, f"<{cls.__qualname__}.__init__>", "exec"), ns)  # noqa: S102
    exec(compile(data_src, f"<{cls.__qualname__}._from_dict>", "exec"), ns)  # noqa: S102
    exec(compile(typed_src, f"<{cls.__qualname__}._from_typed>", "exec"), ns)  # noqa: S102
    options.__dict__["_from_typed"] = ns["_from_typed"]
    init = ns["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    return init, ns["_from_dict"]


def _plain_setattr(cls: Type[Record], options: ModelOptions) -> bool:
    """Whether ``record.field = value`` only stores the value: no ``__setattr__``
    of the class's own (coercion), no descriptor that takes the assignment."""
    if options.coerce or cls.__setattr__ is not object.__setattr__:
        return False
    return all(not hasattr(type(d), "__set__") and not hasattr(type(d), "__delete__")
               and name.isidentifier() for name, d in options.descriptors.items())


def _explain(model: Type[Record], data: Mapping[str, Any], exc: Exception) -> Exception:
    """The field whose value raised ``exc`` while building ``model``, as a
    ``ValidationError`` naming it (``exc`` itself when no single field did)."""
    converters = model._options.__dict__.get("_to_python", {})
    for name, descr in model._options.descriptors.items():
        convert = converters.get(name)
        value = data.get(descr.input_name)
        if convert is None or value is None:
            continue
        try:
            convert(value)
        except MissingField as inner:
            return ValidationError(f"{name}: {inner}", field=name, model=model.__name__)
        except ValidationError as inner:
            return ValidationError(f"{name}.{inner.field}: {inner.reason}", field=name,
                                   model=model.__name__)
        except Exception as inner:  # noqa: BLE001 - the first field that fails is named
            return ValidationError(f"{name}: {type(inner).__name__}: {inner}", field=name,
                                   model=model.__name__)
    return exc


def _keep_extra(known: frozenset[str], reserved: frozenset[str]) -> Callable[[Dict[str, Any],
                                                                              Mapping[Any, Any]],
                                                                             None]:
    def keep(d: Dict[str, Any], data: Mapping[Any, Any]) -> None:
        # Faust keeps fields it does not know as attributes. Names that
        # would hide a method or an internal attribute (``asdict``,
        # ``__class__``) are dropped: data from outside never replaces code.
        for k, v in data.items():
            if k not in known and type(k) is str and k not in reserved \
                    and not k.startswith("_"):
                d[k] = v
    return keep


def _coercing_setattr(self: Record, name: str, value: Any) -> None:
    # Under coerce/validation an assigned field is converted, as Faust's
    # descriptors do on __set__.
    descr = self._options.descriptors.get(name)
    if descr is not None:
        value = descr.prepare_value(value)
    object.__setattr__(self, name, value)


def iter_fields(record: Record) -> Iterator[Tuple[str, Any]]:
    """``(field, value)`` of ``record`` in declaration order."""
    d = record.__dict__
    for name in record._options.fields:
        yield name, d.get(name)
