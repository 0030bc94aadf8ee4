"""The eight Mikels emotions, in the official EmoGen class order, and name validation."""

from __future__ import annotations

import difflib

from emogen_cli.core.errors import EmogenError

# Official EmoGen order (positive first). Every checkpoint we write stores its own order too.
EMOTIONS: tuple[str, ...] = (
    "amusement",
    "awe",
    "contentment",
    "excitement",
    "anger",
    "disgust",
    "fear",
    "sadness",
)


def validate_emotion(name: str, choices: tuple[str, ...] = EMOTIONS) -> str:
    """Return the canonical (lower-case) emotion name, or raise with a 'did you mean'."""
    key = name.strip().lower()
    if key in choices:
        return key
    close = difflib.get_close_matches(key, choices, n=1, cutoff=0.5)
    hint = f"Did you mean '{close[0]}'?" if close else f"Choose one of: {', '.join(choices)}."
    raise EmogenError(f"Unknown emotion '{name}'.", hint)


def parse_emotions(names: list[str] | tuple[str, ...], choices: tuple[str, ...] = EMOTIONS) -> list[str]:
    """Validate a list of names; 'all' expands to every emotion. Order kept, duplicates dropped."""
    out: list[str] = []
    for name in names:
        for part in name.split(","):
            if not part.strip():
                continue
            expanded = list(choices) if part.strip().lower() == "all" else [validate_emotion(part, choices)]
            out.extend(e for e in expanded if e not in out)
    if not out:
        raise EmogenError("No emotion given.", f"Choose from: {', '.join(choices)} or 'all'.")
    return out


def normalise_attribute(name: str) -> str:
    """EmoSet attribute name -> canonical form used everywhere (lower case, spaces -> '_')."""
    return "_".join(name.strip().lower().split())


def attribute_text(name: str) -> str:
    """Canonical attribute name -> the words fed to CLIP ('mountain_snowy' -> 'mountain snowy')."""
    return name.replace("_", " ")
