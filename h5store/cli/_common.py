"""What the commands share: printing a result as text or JSON, sizes and tables for people."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

import h5store


def _print(result: dict[str, Any], as_json: bool, lines: list[str]) -> None:
    if as_json:
        print(json.dumps(result, indent=2, default=_jsonable))
    else:
        print("\n".join(lines))


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _human(nbytes: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if nbytes < 1000 or unit == "GB":
            return f"{nbytes:.1f} {unit}" if unit != "B" else f"{int(nbytes)} B"
        nbytes /= 1000
    return f"{nbytes:.1f} GB"


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]

    def line(cells: Sequence[Any]) -> str:
        return "  ".join(
            str(c).rjust(w) if i in right else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    return [line(header), line(["-" * w for w in widths]), *map(line, rows)]


def _record_dict(record: h5store.Record) -> dict[str, Any]:
    return {
        "id": record.id,
        "label": record.label,
        "true_label": record.true_label,
        # float32 scores as float32 prints them (0.9753115, not 0.9753115177154541)
        "score": None if record.score is None else float(str(np.float32(record.score))),
        "correct": record.correct,
        "shape": list(record.shape),
        "dtype": record.dtype,
        "codec": record.codec,
        "nbytes": record.nbytes,
        "crc32": record.crc32,
        "source": record.source,
        "scores": None if record.scores is None else record.scores.tolist(),
    }


def _safe_url(url: str) -> str:
    """A database URL without its password, for messages."""
    try:
        import sqlalchemy

        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # any unparsable URL: to_sql reports it
        return url
