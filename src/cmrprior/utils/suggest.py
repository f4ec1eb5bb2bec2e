"""'Did you mean' for names a user types (backbones, initialisations): the closest valid name (difflib)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence


def unknown_names(what: str, given: Iterable[str], valid: Sequence[str]) -> str | None:
    """One line naming each of `given` that is not in `valid`, with the closest valid name where one is close
    (`difflib.get_close_matches`), and the valid names; None when every name is valid.

    >>> unknown_names("classifier.backbones", ["vgg61"], ["densenet121", "vgg16"])
    "classifier.backbones: unknown 'vgg61' (did you mean 'vgg16'?); expected some of ['densenet121', 'vgg16']"
    """
    parts = []
    for name in given:
        if name in valid:
            continue
        close = difflib.get_close_matches(str(name), [str(v) for v in valid], n=1, cutoff=0.5)
        parts.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    if not parts:
        return None
    return f"{what}: unknown {', '.join(parts)}; expected some of {list(valid)}"
