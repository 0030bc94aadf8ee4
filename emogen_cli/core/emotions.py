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
    if not key:
        raise EmogenError(f"An emotion name is empty ('{name}').", f"Choose from: {', '.join(choices)} or 'all'.")
    if key in choices:
        return key
    close = difflib.get_close_matches(key, choices, n=1, cutoff=0.5)
    hint = f"Did you mean '{close[0]}'?" if close else f"Choose one of: {', '.join(choices)}."
    raise EmogenError(f"Unknown emotion '{name}'.", hint)


def split_names(text: str, choices: tuple[str, ...] = EMOTIONS) -> list[str]:
    """'awe,fear' -> ['awe', 'fear'] (stripped); an empty name ('', ' ', ',' or 'awe,,fear') is an error,
    never read as 'none given' (which commands take to mean all eight)."""
    parts = [part.strip() for part in text.split(",")]
    if not all(parts):
        raise EmogenError(f"An emotion name is empty in '{text}'.",
                          f"Name emotions separated by commas, from: {', '.join(choices)} or 'all'.")
    return parts


def parse_emotions(names: list[str] | tuple[str, ...], choices: tuple[str, ...] = EMOTIONS) -> list[str]:
    """Validate a list of names; 'all' expands to every emotion. Order kept; a name given twice is an error
    (it would silently make half the images asked for), and so is an empty name."""
    out: list[str] = []
    named: set[str] = set()
    for name in names:
        for part in split_names(name, choices):
            if part.lower() == "all":
                out.extend(e for e in choices if e not in out)
                continue
            emotion = validate_emotion(part, choices)
            if emotion in named:
                raise EmogenError(f"Emotion '{emotion}' is named twice.", "Name each emotion once (-n sets the count).")
            named.add(emotion)
            out.extend([emotion] if emotion not in out else [])
    if not out:
        raise EmogenError("No emotion given.", f"Choose from: {', '.join(choices)} or 'all'.")
    return out


def normalise_attribute(name: str) -> str:
    """EmoSet attribute name -> canonical form used everywhere (lower case, spaces -> '_')."""
    return "_".join(name.strip().lower().split())


def attribute_text(name: str) -> str:
    """Canonical attribute name -> the words fed to CLIP ('mountain_snowy' -> 'mountain snowy')."""
    return name.replace("_", " ")
