"""Build the Cython fast paths; everything else is in pyproject.toml.

The extensions are optional at run time (``SABOT_PURE_PYTHON=1`` or a failed
build selects the pure-Python twins), but ``pip install -e .`` always tries to
build them so that the default install is the fast one.
"""
import glob
import os

from setuptools import Extension, setup

try:
    from Cython.Build import cythonize
except ImportError:  # pragma: no cover - Cython is a build requirement
    cythonize = None


def extensions():
    if cythonize is None or os.environ.get("SABOT_NO_EXTENSIONS"):
        return []
    sources = sorted(glob.glob("sabot/_cython/*.pyx"))
    exts = [
        Extension(
            "sabot._cython." + os.path.splitext(os.path.basename(src))[0],
            [src],
            extra_compile_args=["-O2"],
        )
        for src in sources
    ]
    return cythonize(
        exts,
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "embedsignature": True,
        },
    )


setup(ext_modules=extensions())
