"""Models: Faust's ``Record`` with typed fields, its JSON layout, Arrow inside.

``record`` (the class), ``fields`` (descriptors and checks), ``conversion``
(decoded data into field types), ``namespace`` (Faust's ``__faust`` key),
``json_layout`` (Faust's JSON bytes), ``codec`` (``key_type``/``value_type``
on channels), ``arrow`` (schema and RecordBatches), ``batches``
(``stream.batches()`` of a record channel).
"""
from ..exceptions import ValidationError
from .fields import (BooleanField, BytesField, CharField, DatetimeField, DecimalField,
                     FieldDescriptor, FloatField, IntegerField, NumberField, StringField)
from .namespace import registry
from .record import MissingField, ModelOptions, Record

#: Faust's ``Model`` (the base of its models): Sabot's only model is the record.
Model = Record

__all__ = ["Record", "Model", "ModelOptions", "MissingField", "ValidationError", "registry",
           "FieldDescriptor", "BooleanField", "NumberField", "IntegerField", "FloatField",
           "DecimalField", "CharField", "StringField", "BytesField", "DatetimeField"]
