"""Builds server_framework's compiled engine (Cython) with the machine's C compiler.

The engine is optional: without a C compiler (or if compiling fails) the package installs and
runs its pure-Python engine, and this build says so once. ``SERVER_FRAMEWORK_STRICT_BUILD=1``
(CI) turns that fallback into a failure and every compiler warning into an error.
Everything else about the package is declared in ``pyproject.toml``.
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

STRICT = os.environ.get("SERVER_FRAMEWORK_STRICT_BUILD", "") not in ("", "0")
SOURCES = {"server_framework._cengine": "server_framework/_cengine.pyx"}


def _extensions() -> list[Extension]:
    try:
        from Cython.Build import cythonize
    except ImportError:
        if STRICT:
            raise
        _fallback("Cython is not installed")
        return []
    flags = ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    if STRICT:
        flags.append("-Werror")
    extensions = [
        Extension(name, [source], extra_compile_args=flags) for name, source in SOURCES.items()
    ]
    directives = {
        "language_level": 3,
        "boundscheck": False,
        "wraparound": False,
        "cdivision": True,
        "embedsignature": True,
    }
    return list(cythonize(extensions, compiler_directives=directives, quiet=True))


def _fallback(reason: str) -> None:
    print(
        f"server_framework: the compiled engine was not built ({reason}); "
        "the pure-Python engine will run",
        file=sys.stderr,
    )


class OptionalBuildExt(build_ext):
    """``build_ext`` that falls back to the pure-Python engine instead of failing the install."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            if STRICT:
                raise
            _fallback(f"{type(exc).__name__}: {exc}")

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            if STRICT:
                raise
            _fallback(f"compiling {ext.name} failed: {exc}")


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
