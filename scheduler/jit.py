"""Compiled kernels: numba's ``njit`` typed for mypy, compiled at import, cached on disk.

A hot path that runs one scalar update per reading (the detector's) is compiled instead
of vectorised: numpy over a batch pays a pass over memory and a temporary per operation,
hundreds of them per reading. A kernel is compiled for its one explicit signature when
its module is imported, so no reading waits for the compiler: a worker imports its tasks
before its pool forks, and the children inherit the machine code. ``cache=True`` keeps
that code on disk (``NUMBA_CACHE_DIR`` when set, else ``__pycache__`` beside the source
when it is writable, else the user's cache directory): the first process after a change
compiles (several seconds), later ones load it (well under a second).

Numba keys that cache on the kernel's own file only: a helper or a constant it compiles
in from another module would be stale after that module changed. So a kernel is built
inside a function and names ``fingerprint(...)`` of the modules it depends on, which puts
their source in the key (numba hashes a kernel's closure into it).
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar, cast

import numba

F = TypeVar("F", bound=Callable[..., Any])

#: IEEE arithmetic as numpy does it: a division by zero gives inf or NaN, never an exception.
_OPTIONS: dict[str, Any] = {"error_model": "numpy"}


def compiled(fn: F) -> F:
    """``fn`` compiled into each kernel that calls it (and cached with that kernel)."""
    return cast(F, numba.njit(**_OPTIONS)(fn))


def kernel(signature: Any) -> Callable[[F], F]:
    """Compile the decorated function now, for ``signature`` only, cached on disk."""

    def compile_now(fn: F) -> F:
        try:
            return cast(F, numba.njit(signature, cache=True, **_OPTIONS)(fn))
        except RuntimeError as exc:
            if "no locator available" not in str(exc):
                raise
        # A process that can write no cache directory still starts, compiling for itself.
        warnings.warn(
            f"{fn.__qualname__}: no writable cache directory (set NUMBA_CACHE_DIR); "
            "compiled in this process only",
            RuntimeWarning,
            stacklevel=2,
        )
        return cast(F, numba.njit(signature, **_OPTIONS)(fn))

    return compile_now


def fingerprint(*modules: ModuleType) -> str:
    """A digest of the modules' source, for a kernel's closure (see the module docstring)."""
    digest = hashlib.sha256()
    for module in modules:
        digest.update(Path(str(module.__file__)).read_bytes())
    return digest.hexdigest()


@compiled
def maximum(a: float, b: float) -> float:
    """``np.maximum`` of two floats: a NaN wins (Python's ``max`` depends on the order)."""
    return a if a >= b or a != a else b


@compiled
def minimum(a: float, b: float) -> float:
    """``np.minimum`` of two floats: a NaN wins."""
    return a if a <= b or a != a else b
