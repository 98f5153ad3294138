"""Argument checks at the public boundary: each raises InvalidArgumentError naming the
argument, before anything is read or written, so no TypeError, ValueError or
AttributeError escapes from inside the library for a caller's mistake. All O(1).

Paths have their own rules and error (streamdb/paths.py, InvalidPathError); document data
is checked where it is read (`streamdb.storage.docio.source_pieces`, `as_bytes`).
"""

from __future__ import annotations

import operator
import os
import uuid

from streamdb.errors import InvalidArgumentError


def integer(value: object, name: str, *, minimum: int = 0) -> int:
    """`value` as an int at least `minimum`. Integers of any kind are taken (numpy's too,
    through `__index__`); bools, floats and strings are not."""
    if isinstance(value, bool):
        raise InvalidArgumentError(f"{name} must be an int, not a bool")
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise InvalidArgumentError(
            f"{name} must be an int, not {type(value).__name__} ({value!r:.40})") from None
    if number < minimum:
        raise InvalidArgumentError(f"{name} must be >= {minimum}, not {number}")
    return number


def optional_integer(value: object, name: str, *, minimum: int = 0) -> int | None:
    """None, or `integer(value)`."""
    return None if value is None else integer(value, name, minimum=minimum)


def flag(value: object, name: str) -> bool:
    """A bool (numpy's bool too): `"no"` is not False, so nothing but a bool is taken."""
    kind = type(value)
    if isinstance(value, bool) or (kind.__module__ == "numpy" and kind.__name__ in ("bool",
                                                                                     "bool_")):
        return bool(value)
    raise InvalidArgumentError(f"{name} must be True or False, not {value!r:.40}")


def doc_id(value: object, name: str = "doc_id") -> uuid.UUID:
    """A document id: a uuid.UUID (as `write_document` and `get_id_by_path` return)."""
    if not isinstance(value, uuid.UUID):
        raise InvalidArgumentError(
            f"{name} must be a uuid.UUID (as write_document returns), not "
            f"{type(value).__name__} ({value!r:.40})")
    return value


def choice(value: object, name: str, allowed: tuple[object, ...]) -> object:
    """One of `allowed` (compared by equality, after a type check so that unhashable or
    odd values cannot raise)."""
    if type(value) in {type(a) for a in allowed} and value in allowed:
        return value
    raise InvalidArgumentError(
        f"{name} must be one of {', '.join(map(repr, allowed))}, not {value!r:.40}")


def fspath(value: object, name: str) -> str:
    """A file name: a non-empty str or an os.PathLike of one."""
    try:
        out = os.fspath(value)  # type: ignore[call-overload]
    except TypeError:
        out = None
    if not isinstance(out, str) or not out or "\x00" in out:
        raise InvalidArgumentError(
            f"{name} must be a non-empty str or os.PathLike (without NUL), not {value!r:.60}")
    return out
