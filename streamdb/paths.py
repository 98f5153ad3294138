"""Document paths: the rules of docs/design.md, section 2, and their byte keys in the index."""

from __future__ import annotations

from streamdb.errors import InvalidPathError

MAX_PATH_BYTES = 1024


def path_key(path: object) -> bytes:
    """The UTF-8 key of a valid path. O(len).

    Raises InvalidPathError unless `path` is a str that starts with "/", has no NUL, is
    valid UTF-8 (no lone surrogates) and is at most 1,024 bytes long.
    """
    if not isinstance(path, str):
        raise InvalidPathError(f"a path is a str, not {type(path).__name__}")
    if not path.startswith("/"):
        raise InvalidPathError(f"a path must start with '/': {path[:80]!r}")
    if "\x00" in path:
        raise InvalidPathError("a path must not contain NUL")
    try:
        key = path.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidPathError("a path must be valid UTF-8") from exc
    if len(key) > MAX_PATH_BYTES:
        raise InvalidPathError(f"a path is at most {MAX_PATH_BYTES} bytes, not {len(key)}")
    return key


def search_key(text: object, what: str) -> bytes:
    """The UTF-8 bytes of a prefix or suffix to search for (no other rule applies)."""
    if not isinstance(text, str):
        raise InvalidPathError(f"a {what} is a str, not {type(text).__name__}")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidPathError(f"a {what} must be valid UTF-8") from exc
