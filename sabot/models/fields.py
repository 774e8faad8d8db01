"""Field descriptors of a ``Record``, with Faust's names, options and checks.

``Order.amount`` on the class is the field's descriptor (its name, type,
default, and the checks ``validation=True`` runs); on an instance the value
is read straight from the instance's ``__dict__`` (the descriptor defines no
``__set__``, so a read costs what a plain attribute costs).

As in Faust, a field is converted (``prepare_value``) only when its model
coerces (``coerce=True``, or ``validation=True`` which implies it), and
checked (``validate``) only under ``validation=True``; ``DecimalField`` and
``DatetimeField`` also convert when the model sets ``decimals=True`` or
``isodates=True``.
"""
from __future__ import annotations

import datetime
import decimal
from typing import (TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Mapping, Optional,
                    Tuple, Type)

from ..exceptions import ValidationError

if TYPE_CHECKING:
    from .record import Record

__all__ = ["FieldDescriptor", "BooleanField", "NumberField", "IntegerField", "FloatField",
           "DecimalField", "CharField", "StringField", "BytesField", "DatetimeField",
           "field_for_type", "parse_datetime", "to_datetime", "TYPE_TO_FIELD", "DECIMAL_MAXLEN"]

#: Longest string turned into a Decimal (as Faust's ``str_to_decimal``):
#: a hostile value of megabytes of digits is refused, not parsed.
DECIMAL_MAXLEN = 1000


def parse_datetime(value: Any) -> datetime.datetime:
    """An ISO 8601 string (``Z`` for UTC too) as a ``datetime``: Faust's default
    ``date_parser``. Raises ``ValueError`` for anything else."""
    if isinstance(value, datetime.datetime):
        return value
    if not isinstance(value, str):
        raise TypeError(f"expected an ISO 8601 date string, got {type(value).__name__}")
    return datetime.datetime.fromisoformat(value)


def to_datetime(value: Any) -> Optional[datetime.datetime]:
    """``parse_datetime`` letting ``None`` through: a ``DatetimeField``'s
    conversion under ``isodates``/``coerce`` with the default parser."""
    return value if value is None else parse_datetime(value)


class FieldDescriptor:
    """One field of a ``Record``: Faust's ``FieldDescriptor``.

    Given as a default in the class body to set options::

        class Order(sabot.Record):
            amount: Decimal = DecimalField(max_digits=12, max_decimal_places=2)
            note: str = StringField(required=False, default="")

    ``input_name`` names the field in the serialized data when it differs,
    ``output_name`` in what is written, ``exclude=True`` leaves it out of
    ``asdict()`` and of what is written.
    """

    #: The Python type that this kind of descriptor converts to (None: any).
    python_type: Optional[type] = None

    def __init__(self, *, field: Optional[str] = None, input_name: Optional[str] = None,
                 output_name: Optional[str] = None, type: Any = None,
                 model: Optional[Type["Record"]] = None, required: bool = True,
                 default: Any = None, parent: Optional["FieldDescriptor"] = None,
                 coerce: Optional[bool] = None, exclude: Optional[bool] = None,
                 date_parser: Optional[Callable[[Any], datetime.datetime]] = None,
                 **options: Any) -> None:
        self.field: str = field or ""
        self.input_name: str = input_name or self.field
        self.output_name: str = output_name or self.input_name
        self.type: Any = type
        self.model: Optional[Type["Record"]] = model
        self.required = required
        self.default = default
        self.parent = parent
        self.coerce: bool = bool(coerce)
        self.exclude: bool = bool(exclude)
        self.date_parser: Callable[[Any], datetime.datetime] = date_parser or parse_datetime
        self.options: Dict[str, Any] = options
        # Whether input_name/output_name were given (kept when cloned).
        self._input_name = input_name
        self._output_name = output_name

    # -- descriptor ---------------------------------------------------------
    def __set_name__(self, owner: type, name: str) -> None:
        self.field = name
        self.input_name = self._input_name or name
        self.output_name = self._output_name or self.input_name

    def __get__(self, instance: Any, owner: Optional[type] = None) -> Any:
        if instance is None:
            return self
        # Only reached when the instance has no value (never set): Faust
        # reads the default then too.
        try:
            return instance.__dict__[self.field]
        except KeyError:
            if self.required:
                raise AttributeError(
                    f"{type(instance).__name__!r} has no value for field {self.field!r}") from None
            return self.default

    def clone(self, **kwargs: Any) -> "FieldDescriptor":
        """A copy with ``kwargs`` changed (how a subclass gets its own descriptors)."""
        return type(self)(**{**self.as_dict(), **kwargs})

    def as_dict(self) -> Dict[str, Any]:
        """The arguments that rebuild this descriptor."""
        return {"field": self.field, "input_name": self._input_name,
                "output_name": self._output_name, "type": self.type, "model": self.model,
                "required": self.required, "default": self.default, "parent": self.parent,
                "coerce": self.coerce, "exclude": self.exclude,
                "date_parser": self.date_parser, **self.options}

    # -- conversion and checks ------------------------------------------------
    def should_coerce(self, value: Any, coerce: Optional[bool] = None) -> bool:
        """Whether ``prepare_value`` converts ``value`` (Faust's rule)."""
        c = self.coerce if coerce is None else coerce
        return c and (self.required or value is not None)

    def prepare_value(self, value: Any, *, coerce: Optional[bool] = None) -> Any:
        """``value`` converted to the field's type when the model coerces."""
        return value

    def validate(self, value: Any) -> Iterator[ValidationError]:
        """The field's own checks of an already converted ``value``."""
        return iter(())

    def validate_all(self, value: Any) -> Iterator[ValidationError]:
        """Every problem with ``value``: it does not convert, or a check fails."""
        try:
            v = self.prepare_value(value, coerce=True)
        except (TypeError, ValueError, ArithmeticError) as exc:
            yield self.validation_error(
                f"{self.field} is not correct type for {self!r}, got "
                f"{type(value).__name__}: {exc}")
            return
        if v is not None or self.required:
            if v is None:
                yield self.validation_error(f"{self.field} is required")
                return
            yield from self.validate(v)

    def validation_error(self, reason: str) -> ValidationError:
        """A ``ValidationError`` naming this field."""
        model = self.model.__name__ if self.model is not None else ""
        return ValidationError(reason, field=self.field, model=model)

    def getattr(self, obj: Any) -> Any:
        """This field's value in ``obj`` (through the parents of a nested field)."""
        path = []
        node: Optional[FieldDescriptor] = self
        while node is not None:
            path.append(node.field)
            node = node.parent
        for name in reversed(path):
            obj = getattr(obj, name)
        return obj

    @property
    def ident(self) -> str:
        """``Model.field``."""
        return f"{self.model.__name__ if self.model else '?'}.{self.field}"

    def __repr__(self) -> str:
        default = "" if self.required else f" = {self.default!r}"
        typ = getattr(self.type, "__name__", self.type)
        return f"<{type(self).__name__}: {self.ident}: {typ}{default}>"


class BooleanField(FieldDescriptor):
    """A ``bool`` field."""

    python_type = bool

    def prepare_value(self, value: Any, *, coerce: Optional[bool] = None) -> Any:
        if self.should_coerce(value, coerce):
            return bool(value)
        return value

    def validate(self, value: Any) -> Iterator[ValidationError]:
        if not isinstance(value, bool):
            yield self.validation_error(f"{self.field} must be True or False, of type bool")


class NumberField(FieldDescriptor):
    """A number with optional ``min_value``/``max_value``."""

    def __init__(self, *, max_value: Optional[Any] = None, min_value: Optional[Any] = None,
                 **kwargs: Any) -> None:
        self.max_value = max_value
        self.min_value = min_value
        super().__init__(**kwargs, max_value=max_value, min_value=min_value)

    def validate(self, value: Any) -> Iterator[ValidationError]:
        if self.max_value is not None and value > self.max_value:
            yield self.validation_error(f"{self.field} cannot be more than {self.max_value}")
        if self.min_value is not None and value < self.min_value:
            yield self.validation_error(f"{self.field} must be at least {self.min_value}")


class IntegerField(NumberField):
    """An ``int`` field."""

    python_type = int

    def prepare_value(self, value: Any, *, coerce: Optional[bool] = None) -> Any:
        if self.should_coerce(value, coerce):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(f"{value!r} is not a whole number")
            if isinstance(value, str) and len(value) > DECIMAL_MAXLEN:
                raise ValueError(f"a number of {len(value)} digits is too long")
            return int(value)
        return value


class FloatField(NumberField):
    """A ``float`` field."""

    python_type = float

    def prepare_value(self, value: Any, *, coerce: Optional[bool] = None) -> Any:
        if self.should_coerce(value, coerce):
            return float(value)
        return value


def to_decimal(value: Any) -> decimal.Decimal:
    """``value`` as a finite ``Decimal`` (a string of at most ``DECIMAL_MAXLEN``)."""
    if isinstance(value, decimal.Decimal):
        return value
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise TypeError(f"expected a number or a numeric string, got {type(value).__name__}")
    if isinstance(value, str) and len(value) > DECIMAL_MAXLEN:
        raise ValueError(f"a number of {len(value)} characters is too long")
    try:
        return decimal.Decimal(value)
    except decimal.InvalidOperation:
        raise ValueError(f"{value!r} is not a number") from None


class DecimalField(NumberField):
    """A ``Decimal`` with optional ``max_digits`` and ``max_decimal_places``.

    Written as a string (Faust's layout); read back as a ``Decimal`` when the
    model sets ``decimals=True`` or coerces, as in Faust.
    """

    python_type = decimal.Decimal

    def __init__(self, *, max_digits: Optional[int] = None,
                 max_decimal_places: Optional[int] = None, **kwargs: Any) -> None:
        self.max_digits = max_digits
        self.max_decimal_places = max_decimal_places
        super().__init__(**kwargs, max_digits=max_digits, max_decimal_places=max_decimal_places)

    def prepare_value(self, value: Any, *, coerce: Optional[bool] = None) -> Any:
        if self.should_coerce(value, coerce):
            return to_decimal(value)
        return value

    def validate(self, value: Any) -> Iterator[ValidationError]:
        if not value.is_finite():
            yield self.validation_error(f"Illegal value in decimal: {value!r}")
            return  # digits and places mean nothing for Inf/NaN
        sign, digits, exponent = value.as_tuple()
        assert isinstance(exponent, int)  # finite
        places = -exponent if exponent < 0 else 0
        if self.max_decimal_places is not None and places > self.max_decimal_places:
            yield self.validation_error(
                f"{self.field} must have less than {self.max_decimal_places} decimal places.")
        whole = len(digits) - places if exponent < 0 else len(digits) + exponent
        if self.max_digits is not None and max(whole, 0) + places > self.max_digits:
            yield self.validation_error(
                f"{self.field} must have less than {self.max_digits} digits.")
        yield from super().validate(value)


class CharField(FieldDescriptor):
    """Text or bytes with ``max_length``, ``min_length``, ``trim_whitespace``, ``allow_blank``."""

    def __init__(self, *, max_length: Optional[int] = None, min_length: Optional[int] = None,
                 trim_whitespace: bool = False, allow_blank: bool = False,
                 **kwargs: Any) -> None:
        self.max_length = max_length
        self.min_length = min_length
        self.trim_whitespace = trim_whitespace
        self.allow_blank = allow_blank
        super().__init__(**kwargs, max_length=max_length, min_length=min_length,
                         trim_whitespace=trim_whitespace, allow_blank=allow_blank)

    def validate(self, value: Any) -> Iterator[ValidationError]:
        length = len(value)
        if not self.allow_blank and not length:
            yield self.validation_error(f"{self.field} cannot be left blank")
        if self.min_length and length < self.min_length:
            yield self.validation_error(
                f"{self.field} must have at least {self.min_length} characters")
        if self.max_length and length > self.max_length:
            yield self.validation_error(
                f"{self.field} must have at most {self.max_length} characters")


class StringField(CharField):
    """A ``str`` field."""

    python_type = str

    def prepare_value(self, value: Any, *, coerce: Optional[bool] = None) -> Any:
        if self.should_coerce(value, coerce):
            if not isinstance(value, (str, int, float, decimal.Decimal)):
                # Faust would str() anything; a dict or list arriving for a
                # text field under validation is a wrong type, not text.
                raise TypeError(f"expected text, got {type(value).__name__}")
            val = value if isinstance(value, str) else str(value)
            return val.strip() if self.trim_whitespace else val
        return value


class BytesField(CharField):
    """A ``bytes`` field (text in JSON, encoded with ``encoding``)."""

    python_type = bytes

    def __init__(self, *, encoding: str = "utf-8", errors: str = "strict",
                 **kwargs: Any) -> None:
        self.encoding = encoding
        self.errors = errors
        super().__init__(encoding=encoding, errors=errors, **kwargs)

    def prepare_value(self, value: Any, *, coerce: Optional[bool] = None) -> Any:
        if self.should_coerce(value, coerce):
            if isinstance(value, str):
                val = value.encode(self.encoding, self.errors)
            elif isinstance(value, (bytes, bytearray)):
                val = bytes(value)
            else:
                raise TypeError(f"expected bytes or text, got {type(value).__name__}")
            return val.strip() if self.trim_whitespace else val
        return value


class DatetimeField(FieldDescriptor):
    """A ``datetime``: written in ISO 8601 (``Z`` for UTC), read back as a
    ``datetime`` when the model sets ``isodates=True`` or coerces."""

    python_type = datetime.datetime

    def prepare_value(self, value: Any, *, coerce: Optional[bool] = None) -> Any:
        if self.should_coerce(value, coerce):
            if value is not None and not isinstance(value, datetime.datetime):
                return self.date_parser(value)
        return value


#: The descriptor class for each plain type (Faust's ``TYPE_TO_FIELD``).
TYPE_TO_FIELD: Mapping[type, Type[FieldDescriptor]] = {
    bool: BooleanField,
    int: IntegerField,
    float: FloatField,
    decimal.Decimal: DecimalField,
    str: StringField,
    bytes: BytesField,
    datetime.datetime: DatetimeField,
}


def field_for_type(typ: Any) -> Type[FieldDescriptor]:
    """The descriptor class for ``typ`` (``FieldDescriptor`` when none fits)."""
    try:
        return TYPE_TO_FIELD[typ]
    except (KeyError, TypeError):
        pass
    if isinstance(typ, type):
        for base, descriptor in TYPE_TO_FIELD.items():
            if issubclass(typ, base) and base is not bool:
                return descriptor
    return FieldDescriptor


def descriptor_names(descriptors: Mapping[str, FieldDescriptor]) -> List[Tuple[str, str]]:
    """``(attribute, input name)`` for each field whose names differ."""
    return [(name, d.input_name) for name, d in descriptors.items() if d.input_name != name]
