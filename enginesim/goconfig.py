"""Decode a /import body the way Go's encoding/json fills buildkit's CacheConfig.

Go matches field names case-insensitively, ignores unknown fields, leaves a field at its zero
value on JSON null, and fails the whole Unmarshal on any type mismatch (a float or a bool
where an int goes, a number where a string goes). The engine then fails the whole import, so
every such mismatch is reported as an error here.
"""

from dataclasses import dataclass, field

from enginesim.gojson import ZERO_TIME, GoTime, parse_time


class ConfigError(Exception):
    """The engine would fail this import (its message says why)."""


@dataclass
class LayerAnnotations:
    media_type: str = ""
    diff_id: str = ""
    size: int = 0
    created_at: GoTime | None = None


@dataclass
class CacheLayer:
    blob: str = ""
    parent: int = 0  # omitempty: an absent parent is 0, not -1
    annotations: LayerAnnotations | None = None


@dataclass
class CacheInput:
    selector: str = ""
    link: int = 0


@dataclass
class CacheResult:
    layer: int = 0
    created_at: GoTime | None = None


@dataclass
class ChainedResult:
    layers: list = field(default_factory=list)
    created_at: GoTime | None = None


@dataclass
class CacheRecord:
    digest: str = ""
    inputs: list = field(default_factory=list)  # list[list[CacheInput]]
    results: list = field(default_factory=list)  # list[CacheResult]
    chains: list = field(default_factory=list)  # list[ChainedResult]


@dataclass
class CacheConfig:
    layers: list = field(default_factory=list)
    records: list = field(default_factory=list)


def decode(value) -> CacheConfig:
    config = CacheConfig()
    if value is None:
        return config
    fields = _fields(value, "CacheConfig", ("layers", "records"))
    config.layers = _list(fields.get("layers"), "layers", _layer)
    config.records = _list(fields.get("records"), "records", _record)
    return config


def _fields(value, where, names):
    if not isinstance(value, dict):
        raise ConfigError(f"json: cannot unmarshal {_kind(value)} into Go value of type {where}")
    out = {}
    for key, item in value.items():
        lowered = key.lower()
        for name in names:
            if name.lower() == lowered:
                out[name] = item
    return out


def _kind(value):
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def _list(value, where, item_decoder):
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"json: cannot unmarshal {_kind(value)} into Go struct field {where} of type slice")
    return [item_decoder(item, f"{where}[{i}]") for i, item in enumerate(value)]


def _str(value, where, default=""):
    if value is None:
        return default
    if not isinstance(value, str):
        raise ConfigError(f"json: cannot unmarshal {_kind(value)} into Go struct field {where} of type string")
    return value


def _int(value, where, default=0):
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"json: cannot unmarshal {_kind(value)} {value!r} into Go struct field {where} of type int")
    return value


def _time(value, where):
    if value is None:
        return None
    try:
        parsed = parse_time(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return None if value == ZERO_TIME else parsed


def _layer(value, where):
    if value is None:
        return CacheLayer()
    f = _fields(value, where, ("blob", "parent", "annotations"))
    layer = CacheLayer(blob=_str(f.get("blob"), f"{where}.blob"), parent=_int(f.get("parent"), f"{where}.parent"))
    ann = f.get("annotations")
    if ann is not None:
        a = _fields(ann, f"{where}.annotations", ("mediaType", "diffID", "size", "createdAt"))
        layer.annotations = LayerAnnotations(
            media_type=_str(a.get("mediaType"), f"{where}.annotations.mediaType"),
            diff_id=_str(a.get("diffID"), f"{where}.annotations.diffID"),
            size=_int(a.get("size"), f"{where}.annotations.size"),
            created_at=_time(a.get("createdAt"), f"{where}.annotations.createdAt"),
        )
    return layer


def _record(value, where):
    if value is None:
        return CacheRecord()
    f = _fields(value, where, ("digest", "inputs", "layers", "chains"))

    def inputs_for_index(item, w):
        return _list(item, w, _input)

    return CacheRecord(
        digest=_str(f.get("digest"), f"{where}.digest"),
        inputs=_list(f.get("inputs"), f"{where}.inputs", inputs_for_index),
        results=_list(f.get("layers"), f"{where}.layers", _result),
        chains=_list(f.get("chains"), f"{where}.chains", _chained),
    )


def _input(value, where):
    if value is None:
        return CacheInput()
    f = _fields(value, where, ("selector", "link"))
    return CacheInput(selector=_str(f.get("selector"), f"{where}.selector"), link=_int(f.get("link"), f"{where}.link"))


def _result(value, where):
    if value is None:
        return CacheResult()
    f = _fields(value, where, ("layer", "createdAt"))
    return CacheResult(layer=_int(f.get("layer"), f"{where}.layer"), created_at=_time(f.get("createdAt"), f"{where}.createdAt"))


def _chained(value, where):
    if value is None:
        return ChainedResult()
    f = _fields(value, where, ("layers", "createdAt"))
    return ChainedResult(
        layers=_list(f.get("layers"), f"{where}.layers", lambda v, w: _int(v, w)),
        created_at=_time(f.get("createdAt"), f"{where}.createdAt"),
    )
