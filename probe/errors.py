"""Errors a user can act on.

Every error `probe` raises for a user mistake derives from `ProbeError`, so the command line
can print its message (which names the input, the problem and the fix) without a traceback,
while genuine bugs still surface with one. The concrete classes also derive from the builtin
that matches the mistake (`ValueError`, `TypeError`, `OSError`), so ordinary Python code can
catch them the usual way.
"""
from __future__ import annotations

import difflib


class ProbeError(Exception):
    """Base class of the errors that describe a user mistake or an unusable input."""


class InputValueError(ProbeError, ValueError):
    """An input has the right type but a wrong value or shape (NaN, too few samples, ...)."""


class InputTypeError(ProbeError, TypeError):
    """An input has the wrong type or dtype."""


class DataFormatError(ProbeError, ValueError):
    """A file is truncated, corrupt or not in the expected format."""


class DataUnavailableError(ProbeError, OSError):
    """A dataset is neither cached nor downloadable (offline, missing folder, bad checksum)."""


class UnknownNameError(ProbeError, KeyError):
    """A name (estimator, critic, study, dataset, analyzer, ...) is not registered."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


def unknown_name(kind: str, name: str, known: list[str] | tuple[str, ...]) -> UnknownNameError:
    """Build the "Unknown estimator 'infoNCE'. Did you mean 'infonce'?" error."""
    known = sorted(known)
    lowered = {k.lower(): k for k in known}
    close = [lowered[c] for c in difflib.get_close_matches(str(name).lower(), list(lowered), n=1, cutoff=0.5)]
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return UnknownNameError(f"Unknown {kind} '{name}'.{hint} Known: {', '.join(known)}.")
