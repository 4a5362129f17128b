"""A job's warnings as the page says them: each once, and a setting the device lowered named by its label on the
page ("Texture size: 512 instead of 1024"), as the note above Generate says it, not by its settings key."""
import re

from ..settings import CPU_REASONS
from .values import LABELS

# "texture_size 1024 -> 512 (" in desktop.settings.device_change_warning's words: key, value before, value used.
CHANGE = re.compile(r"\b(" + "|".join(re.escape(n) for n in sorted(CPU_REASONS, key=len, reverse=True))
                    + r") (\S+) -> (\S+) \(")


def page_warning(text: str) -> str:
    """One warning with each lowered setting named by its page label, its value used first (the device note's
    order)."""
    return CHANGE.sub(lambda m: f"{LABELS.get(m[1], m[1])}: {m[3]} instead of {m[2]} (", text)


def page_warnings(warnings) -> list:
    """A job's warnings in the page's words, each once, in their order (text only: a stray non-string is dropped)."""
    return list(dict.fromkeys(page_warning(w) for w in warnings or () if isinstance(w, str)))
