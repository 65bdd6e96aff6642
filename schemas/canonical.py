"""The fast path of event validation: events already in their normalized form (ingest API).

:func:`canonical_event` validates one decoded event against a schema derived
from the event models (:mod:`schemas.events`) that checks everything in
pydantic-core, builds no model instances and returns the normalized JSON
object itself: the same object, key order included, as
``parse_event_obj(obj).model_dump(mode="json", exclude_none=True)``. It returns
None for anything it is not sure of, and the caller then takes the full path
(:func:`schemas.validation.parse_event_obj`), which decides and explains. The
fast path therefore never rejects and never decides a reason.

What it accepts is a subset of what the models accept, with the same output:

* every constraint of every field, taken from the models' own field
  definitions (lengths, patterns, strictness, enums, nesting); the plate key
  keeps the models' normalizing validator, so ``subject`` may be unnormalized;
* ``time`` only as ``YYYY-MM-DDTHH:MM:SSZ`` and dates only as ``YYYY-MM-DD``,
  years 1900 to 2200, no 29 February (the models' own validators parse any
  RFC 3339 offset; these are the texts the models print back unchanged);
* no ``null`` anywhere, no extension attributes, ``datacontenttype`` absent or
  exactly ``application/json``, and fields whose models fill in a default given
  (the owner's ``language``), except ``data`` of ``plate.device_unpaired``,
  which is filled in as the models do (``{}``).

Not checked here: ``future_time`` (the caller compares ``time`` with its
clock, :func:`schemas.validation.check_not_future`). ``too_large`` and the
nesting limit cannot apply: every string and list of the schema is bounded, and
a test holds the largest canonical event under the size limit.

A Python-level validator of the models that this module does not know makes
the import fail (:data:`_REPLACED`, :data:`_KEPT`), and a unit test compares
the models' class-level validators with :data:`HANDLED_VALIDATORS`.
"""

from __future__ import annotations

import copy
import types
import typing
from datetime import UTC, datetime
from enum import Enum
from typing import Annotated, Any, Literal, NotRequired, Required, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    Strict,
    TypeAdapter,
    ValidationError,
    WrapValidator,
    with_config,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict

from schemas._types import IsoDate, Rfc3339Datetime
from schemas.events import EVENT_MODELS, PlateOwnerUpdatedData, _check_phone_digits
from schemas.plates import PLATE_KEY_PATTERN, PlateKey

__all__ = [
    "CANONICAL_EVENT_ADAPTER",
    "HANDLED_VALIDATORS",
    "canonical_batch",
    "canonical_event",
    "canonical_time",
    "canonical_time_text",
]

_YEAR = r"(?:19[0-9]{2}|2[01][0-9]{2}|2200)"
#: Month and day, every day that exists in every year (29 February is left to the models).
_MONTH_DAY = (r"(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"
              r"|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)")
CANONICAL_DATE_PATTERN = rf"^{_YEAR}-{_MONTH_DAY}$"
CANONICAL_TIME_PATTERN = (rf"^{_YEAR}-{_MONTH_DAY}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]Z$")

_CanonicalDate = Annotated[str, Strict(), Field(pattern=CANONICAL_DATE_PATTERN)]
_CanonicalTime = Annotated[str, Strict(), Field(pattern=CANONICAL_TIME_PATTERN)]
_VALIDATORS = (AfterValidator, BeforeValidator, PlainValidator, WrapValidator)


def _validator_funcs(alias: Any) -> list[Any]:
    return [m.func for m in get_args(alias)[1:] if isinstance(m, _VALIDATORS)]


#: Validators in field types whose result is not JSON text: replaced by the canonical text.
_REPLACED: dict[Any, Any] = {
    **dict.fromkeys(_validator_funcs(IsoDate), _CanonicalDate),
    **dict.fromkeys(_validator_funcs(Rfc3339Datetime), _CanonicalTime),
}
#: Validators in field types kept as they are (they return the normalized text).
_KEPT = frozenset(_validator_funcs(PlateKey))
#: A plate key that is already normalized, checked without Python (the kept validator
#: returns it unchanged); any other key goes through that validator.
_NORMALIZED_KEY = Annotated[str, Strict(), Field(pattern=PLATE_KEY_PATTERN)]
#: A phone number the models accept whose 4 to 15 digits the pattern itself counts
#: (at most 31 characters: within the models' limits with or without the '+').
_COUNTED_PHONE = Annotated[str, Strict(), Field(
    max_length=31, pattern=r"^\+?[0-9](?:[ ().-]*[0-9]){3,14}[ ().-]*$")]


def _owner_update_not_empty(value: dict[str, Any]) -> dict[str, Any]:
    if not value:  # the model's _at_least_one (no nulls get this far)
        raise PydanticCustomError("owner_update_empty", "empty owner update")
    return value


#: Fields with a class-level validator: the canonical form of each.
_FIELD_RULES: dict[str, Any] = {
    # _content_type: the one media type the models print back unchanged
    "datacontenttype": Literal["application/json"],
}
#: Class-level field validators applied as they are: field name -> check.
_FIELD_CHECKS: dict[str, Any] = {"phone": _check_phone_digits}
#: Texts a pydantic-core pattern proves valid and normalized (no Python call).
_SHORTCUTS: dict[str, Any] = {"subject": _NORMALIZED_KEY, "phone": _COUNTED_PHONE}
#: Class-level model validators applied to the canonical object: model -> check.
_MODEL_CHECKS: dict[type[BaseModel], Any] = {PlateOwnerUpdatedData: _owner_update_not_empty}
#: The class-level validators of the event models and how this module covers each
#: (tests/unit compares them with the models).
HANDLED_VALIDATORS = {
    "_specversion": "the field type Literal['1.0'] accepts exactly '1.0' (no null)",
    "_content_type": "_FIELD_RULES: only application/json",
    "_extensions": "extension attributes are not canonical (extra='forbid')",
    "_null_data": "data absent is filled in as {} (_FILLS); null is not canonical",
    "_phone": "_FIELD_CHECKS: the same digit check",
    "_at_least_one": "_MODEL_CHECKS: a non-empty update (nulls are not canonical)",
}


def _field_type(tp: Any, metadata: list[Any]) -> Any:
    """The canonical type of a model field's type with its constraints ``metadata``."""
    for item in metadata:
        if isinstance(item, _VALIDATORS):
            if item.func in _REPLACED:
                return _REPLACED[item.func]
            if item.func not in _KEPT:
                raise TypeError(f"no canonical form for validator {item.func!r}")
        if isinstance(item, FieldInfo) and any(isinstance(m, _VALIDATORS) for m in item.metadata):
            raise TypeError("validators inside Field() are not supported")
    origin = get_origin(tp)
    if origin is Annotated:
        base, *inner = get_args(tp)
        return _field_type(base, [*inner, *metadata])
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(tp) if a is not type(None)]
        if len(options) != 1:
            raise TypeError(f"no canonical form for {tp!r}")
        return _field_type(options[0], metadata)
    if origin is list:
        result: Any = list[_field_type(get_args(tp)[0], [])]  # type: ignore[misc]
    elif isinstance(tp, type) and issubclass(tp, BaseModel):
        result = _typed_dict(tp)
    elif isinstance(tp, type) and issubclass(tp, Enum):
        result = Literal[tuple(member.value for member in tp)]  # type: ignore[valid-type]
    elif origin is Literal or tp in (str, int, bool):
        result = tp
    else:
        raise TypeError(f"no canonical form for {tp!r}")
    return Annotated[result, *metadata] if metadata else result


#: event type -> (field, JSON value): a last envelope field whose model default the models
#: print when it is absent (``data`` of ``plate.device_unpaired``); appended when absent,
#: which keeps the models' key order.
_FILLS: dict[str, tuple[str, Any]] = {}


def _last_field(model: type[BaseModel]) -> str | None:
    if "type" not in model.model_fields or get_origin(model.model_fields["type"].annotation) \
            is not Literal:
        return None  # not an event envelope
    return list(model.model_fields)[-1]


def _dumped_default(info: FieldInfo) -> Any:
    value = info.get_default(call_default_factory=True)
    return value.model_dump(mode="json", exclude_none=True) \
        if isinstance(value, BaseModel) else value


def _fill(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for event in events:
        fill = _FILLS.get(event["type"])
        if fill is not None and fill[0] not in event:
            event[fill[0]] = copy.deepcopy(fill[1])
    return events


def _typed_dict(model: type[BaseModel]) -> Any:
    """A TypedDict with the model's fields in the model's order, extra keys forbidden."""
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        tp = _FIELD_RULES.get(name) or _field_type(info.annotation, list(info.metadata))
        if name in _FIELD_CHECKS:
            tp = Annotated[tp, AfterValidator(_FIELD_CHECKS[name])]
        if name in _SHORTCUTS:  # tried first; the field's own validation decides otherwise
            tp = Annotated[Union[_SHORTCUTS[name], tp],  # noqa: UP007
                           Field(union_mode="left_to_right")]
        # Required: no default, or a default the model prints (it must be spelled out).
        optional = not info.is_required() and info.default is None \
            and info.default_factory is None
        if info.default_factory is not None and name == _last_field(model):
            optional = True  # absent: filled in afterwards (see _FILLS)
            type_field = model.model_fields["type"].annotation
            _FILLS[get_args(type_field)[0]] = (name, _dumped_default(info))
        fields[name] = NotRequired[tp] if optional else Required[tp]
    typed = TypedDict(f"Canonical{model.__name__}", fields)  # type: ignore[operator]
    typed = with_config(ConfigDict(extra="forbid", hide_input_in_errors=True))(typed)
    if model in _MODEL_CHECKS:
        return Annotated[typed, AfterValidator(_MODEL_CHECKS[model])]
    return typed


_CanonicalEvent = Annotated[
    Union[tuple(_typed_dict(m) for m in EVENT_MODELS.values())],  # type: ignore[valid-type]  # noqa: UP007
    Field(discriminator="type"),
]
CANONICAL_EVENT_ADAPTER: TypeAdapter[dict[str, Any]] = TypeAdapter(_CanonicalEvent)
_validate = CANONICAL_EVENT_ADAPTER.validate_python
_validate_list = TypeAdapter(list[_CanonicalEvent]).validate_python


def canonical_event(obj: object) -> dict[str, Any] | None:
    """The normalized JSON object of a valid canonical event, or None (take the full path)."""
    try:
        return _fill([typing.cast(dict[str, Any], _validate(obj))])[0]
    except ValidationError:
        return None


def canonical_batch(items: list[Any]) -> list[dict[str, Any]] | None:
    """:func:`canonical_event` of every item in one call, or None when any is not canonical."""
    try:
        return _fill(typing.cast(list[dict[str, Any]], _validate_list(items)))
    except ValidationError:
        return None


def canonical_time_text(moment: datetime) -> str:
    """``moment`` (aware) as canonical ``time`` text, truncated to the second. For a
    canonical ``time`` text ``t``: ``t > canonical_time_text(m)`` exactly when the
    instant ``t`` is after ``m`` (fixed-width UTC texts compare like instants, and
    ``t`` is a whole second)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def canonical_time(obj: dict[str, Any]) -> datetime:
    """The ``time`` of an object :func:`canonical_event` returned, as an aware datetime."""
    return datetime.fromisoformat(obj["time"])
