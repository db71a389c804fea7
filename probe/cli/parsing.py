"""The values of run-study's and robustness' options that click cannot parse alone: --set, --seeds."""
from __future__ import annotations

import click


def parse_set(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{pair!r}: use KEY=VALUE, e.g. --set learning_rate=3e-4.", param_hint="--set")
        out[key.strip()] = value.strip()
    return out


def parse_seeds(value: str | None) -> int | tuple[int, ...] | None:
    """'3' -> 3 (seeds 0, 1, 2); '0,4,7' -> (0, 4, 7); '2-5' -> (2, 3, 4, 5). Errors quote what was typed."""
    if value is None:
        return None
    text = value.strip()
    try:
        if "," in text:
            seeds = tuple(int(v) for v in text.split(",") if v.strip())
            if not seeds:
                raise click.BadParameter(f"{value!r} lists no seed; give e.g. 0,4,7.", param_hint="--seeds")
            return seeds
        if "-" in text[1:]:
            lo, hi = (int(v) for v in text.split("-", 1))
            if hi < lo:
                raise click.BadParameter(f"{value!r} is an empty range ({lo} > {hi}); write the lower seed first, "
                                         f"e.g. {hi}-{lo}.", param_hint="--seeds")
            return tuple(range(lo, hi + 1))
        count = int(text)
    except ValueError:
        raise click.BadParameter(f"{value!r}: give a count (3), a list (0,4,7) or a range (0-9).",
                                 param_hint="--seeds") from None
    if count < 1:
        raise click.BadParameter(f"{value!r}: at least one seed is required, e.g. --seeds 3.", param_hint="--seeds")
    return count
