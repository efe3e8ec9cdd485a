"""Configs to JSON and back with pydantic's `TypeAdapter`, which validates as it reads.

Run folders keep their `TrainConfig` as config.json and `cityseg serve --workers` hands
its `ServeConfig` to each worker as JSON. A hand-written loop converted Paths and Enums
but took any value for any field, so a hand-edited config.json with `"epochs": "ten"`
failed deep inside training; pydantic turns it into one line naming the field. Pydantic
comes with FastAPI, and is imported only when a config is read or written.
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


def config_to_json(config: Any) -> dict[str, Any]:
    """The dataclass as JSON types: Paths as strings, Enums as their values."""
    dumped: dict[str, Any] = _adapter(type(config)).dump_python(config, mode="json")
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
