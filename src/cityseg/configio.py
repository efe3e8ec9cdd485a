"""Configs and reports to JSON and back with pydantic's `TypeAdapter`, which validates as
it reads.

Run folders keep their `TrainConfig` as config.json and `cityseg serve --workers` hands
its `ServeConfig` to each worker as JSON. A hand-written loop converted Paths and Enums
but took any value for any field, so a hand-edited config.json with `"epochs": "ten"`
failed deep inside training; pydantic turns it into one line naming the field. Pydantic
comes with FastAPI, and is imported only when a config is read or written.
Reports (export.json's parity record, metrics.json's scores, `benchmark --json`) are
written the same way, so each record is its dataclass's fields, in their order, rather
than a hand-kept copy of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from cityseg.errors import DataError

if TYPE_CHECKING:
    from pydantic import TypeAdapter

Config = TypeVar("Config")


_ADAPTERS: dict[type[Any], TypeAdapter[Any]] = {}


def _adapter(kind: type[Any]) -> TypeAdapter[Any]:
    """One adapter per class: building it compiles a validator, which is worth reusing."""
    if kind not in _ADAPTERS:
        from pydantic import TypeAdapter

        _ADAPTERS[kind] = TypeAdapter(kind)
    return _ADAPTERS[kind]


def json_record(record: Any, exclude: set[str] | None = None) -> dict[str, Any]:
    """The dataclass as JSON types: Paths as strings, Enums as their values, tuples as
    lists, nested dataclasses as records; the fields in `exclude` left out."""
    dumped: dict[str, Any] = _adapter(type(record)).dump_python(
        record, mode="json", exclude=exclude
    )
    return dumped


def config_from_json(kind: type[Config], raw: dict[str, Any], where: str) -> Config:
    """`kind` from a JSON record, ignoring keys it does not know (a run's config.json also
    holds classes, versions, ...); a wrong value is one line naming `where` and the field."""
    from dataclasses import fields

    from pydantic import ValidationError

    known = {f.name for f in fields(kind)}  # type: ignore[arg-type]
    try:
        config: Config = _adapter(kind).validate_python(
            {k: v for k, v in raw.items() if k in known}
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"])
        raise DataError(f"{where}: {field}: {error['msg']} (got {error.get('input')!r})") from exc
    return config
