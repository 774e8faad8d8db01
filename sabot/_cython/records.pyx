# cython: language_level=3, boundscheck=False, wraparound=False
"""Records made from a fetch's columns (Cython twin of ``records_py.py``; same API).

See ``sabot/_cython/records_py.py`` for the contract.
"""
from cpython.object cimport PyObject_GenericSetAttr

__all__ = ["build_records"]

cdef object _new = object.__new__


def build_records(build, type model, tuple names, columns):
    """``[build(*row) for row in zip(*columns)]`` (see the pure-Python twin)."""
    if not names:
        return list(map(build, *columns))
    cdef list cols = [c if type(c) is list else list(c) for c in columns]
    cdef Py_ssize_t k = len(names)
    if len(cols) != k:
        raise TypeError(f"{k} names for {len(cols)} columns")
    cdef Py_ssize_t n = min([len(c) for c in cols]) if k else 0
    cdef list out = [None] * n
    cdef Py_ssize_t i, j
    cdef object record
    for i in range(n):
        record = _new(model)
        for j in range(k):
            # What ``record.name = value`` does for a class without a
            # __setattr__ of its own (the value lands in the instance's slots).
            PyObject_GenericSetAttr(record, names[j], (<list>cols[j])[i])
        out[i] = record
    return out
