"""Counted nouns in the sentences people read (messages, report conclusions): "1 image", "2 images".

Django's ``pluralize`` serves templates; this is the same for text built in Python. English only, as is
the rest of the interface.
"""

from __future__ import annotations


def counted(count: int, singular: str, plural: str | None = None) -> str:
    """``counted(1, "image")`` -> "1 image"; ``counted(3, "image")`` -> "3 images"."""
    return f"{count} {singular if count == 1 else plural or singular + 's'}"
