"""Injection documents: the JSON or YAML files `inject` and `plan` read, as InjectionRequests.

Two library shortcuts are avoided on purpose:
- `yaml.safe_load` for every file: YAML is not quite a superset of JSON. A JSON string
  with a surrogate pair ("\\ud83d\\ude80", one emoji) is two invalid code points to YAML,
  so a `.json` file is read as JSON, a `.yaml`/`.yml` file as YAML, anything else (and
  stdin, `-f -`) by a look at its first character.
- `json_format.ParseDict` alone: it stops at the first unknown field and names fields in
  camelCase. An operator fixing a file wants every problem at once, with each field named
  as the docs name it (`target.max_pods`), so the document is first walked against the
  message descriptor, and only a document that passes is handed to ParseDict.

`duration_seconds` also takes "30s", "5m", "1h" (or "1h30m") here, in the document; the
API field stays a number of seconds.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from faultplane.v1 import faultplane_pb2 as pb

STDIN = "-"
JSON_SUFFIXES = frozenset({".json"})
YAML_SUFFIXES = frozenset({".yaml", ".yml"})
DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0}
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?[hms])+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([hms])")
_INTEGER_RANGES = {
    FieldDescriptor.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.CPPTYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.CPPTYPE_UINT64: (0, 2**64 - 1),
}
_FLOATS = {FieldDescriptor.CPPTYPE_DOUBLE, FieldDescriptor.CPPTYPE_FLOAT}
# The spellings of the special floats that the proto3 JSON mapping accepts as strings.
_FLOAT_WORDS = frozenset({"NaN", "Infinity", "-Infinity"})


class DocumentError(ValueError):
    """The document cannot become a request; `problems` are (field path, reason) pairs,
    the path empty when the problem is the whole document."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = [f"{path}: {reason}" if path else reason for path, reason in problems]
        if len(lines) == 1:
            text = f"{source}: {lines[0]}"
        else:
            text = f"{source}: {len(lines)} problems:\n" + "\n".join(f"  {ln}" for ln in lines)
        super().__init__(text)


def read_injection_request(path: str | Path) -> pb.InjectionRequest:
    """The request a file (or `-`, stdin) describes; raises DocumentError."""
    source, document = load_document(path)
    return request_from_document(document, source)


def load_document(path: str | Path) -> tuple[str, Any]:
    """(a name for messages, the parsed document), choosing the parser by file name."""
    source = "<stdin>" if str(path) == STDIN else str(path)
    try:
        text = sys.stdin.read() if str(path) == STDIN else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise DocumentError(source, [("", exc.strerror or str(exc))]) from exc
    except UnicodeDecodeError as exc:
        raise DocumentError(source, [("", f"not UTF-8 text (byte {exc.start})")]) from exc
    suffix = "" if str(path) == STDIN else Path(path).suffix.lower()
    if suffix in JSON_SUFFIXES:
        return source, _json(text, source)
    if suffix in YAML_SUFFIXES:
        return source, _yaml(text, source)
    if text.lstrip()[:1] in ("{", "["):  # sniffed: JSON, or YAML in flow style
        try:
            return source, _json(text, source)
        except DocumentError as json_error:
            try:
                return source, yaml.safe_load(text)
            except yaml.YAMLError:
                raise json_error from None
    return source, _yaml(text, source)


def _json(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise DocumentError(source, [("", f"not valid JSON: {exc.msg} at {where}")]) from None


def _yaml(text: str, source: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DocumentError(source, [("", f"not valid YAML: {exc}")]) from None


def request_from_document(document: Any, source: str) -> pb.InjectionRequest:
    """Every problem of the document at once, or the request it describes."""
    if not isinstance(document, Mapping):
        raise DocumentError(
            source,
            [("", "must be a mapping with target, fault, duration_seconds, steady_state, "
                  "hypothesis and owner")],
        )  # fmt: skip
    document = dict(document)
    problems: list[tuple[str, str]] = []
    for key in ("duration_seconds", "durationSeconds"):
        if document.get(key) is None:
            continue
        try:
            document[key] = parse_duration(document[key])
        except (ValueError, OverflowError):
            value = document.pop(key)
            units = 'give seconds (30), or "30s", "5m", "1h"'
            problems.append(("duration_seconds", f"{_shown(value)} is not a duration: {units}"))
    for key in ("on_conflict", "onConflict"):
        if document.get(key) in ("queue", "refuse"):  # the short spelling of the enum
            document[key] = f"ON_CONFLICT_{document[key].upper()}"
    if document.get("faults") == []:  # proto3 cannot tell an empty list from none
        problems.append(("faults", "must not be empty: give at least one {target, fault}"))
    _walk(document, pb.InjectionRequest.DESCRIPTOR, "", problems)
    if problems:
        raise DocumentError(source, problems)
    try:
        return json_format.ParseDict(document, pb.InjectionRequest())
    except json_format.ParseError as exc:  # a case the walk does not foresee
        raise DocumentError(source, [("", str(exc))]) from None


def parse_duration(value: Any) -> float:
    """Seconds from a number, a numeric string, or "30s", "5m", "1h", "1h30m"."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str):
        raise ValueError(value)
    text = value.strip()
    if _DURATION.fullmatch(text):
        return sum(float(n) * DURATION_UNITS[unit] for n, unit in _DURATION_PART.findall(text))
    return float(text)  # "30", or "NaN": the server judges the value


def _walk(
    document: Mapping[Any, Any],
    descriptor: Descriptor,
    prefix: str,
    problems: list[tuple[str, str]],
) -> None:
    """Adds a problem for every unknown key, every value of the wrong shape, and every
    second member of a oneof (`fault.abort` beside `fault.latency`)."""
    oneof_members: dict[str, str] = {}  # oneof name -> the member given first
    for key, value in document.items():
        path = f"{prefix}{_key(key)}"
        field = descriptor.fields_by_name.get(key) if isinstance(key, str) else None
        if field is None and isinstance(key, str):
            field = descriptor.fields_by_camelcase_name.get(key)  # the proto3 JSON spelling
        if field is None:
            problems.append((path, _unknown(key, descriptor, prefix)))
            continue
        path = f"{prefix}{field.name}"
        if value is None:
            continue  # null: the field's default, as in the proto3 JSON mapping
        oneof = field.containing_oneof
        if oneof is not None and len(oneof.fields) > 1:  # not a proto3 `optional`
            first = oneof_members.setdefault(oneof.name, field.name)
            if first != field.name:
                members = ", ".join(f.name for f in oneof.fields)
                problems.append((path, f"give only one of {members} (found {prefix}{first} too)"))
                continue
        if _is_map(field):
            _map(value, field, path, problems)
        elif field.is_repeated:
            if not isinstance(value, list):
                problems.append((path, f"must be a list, not {_kind(value)}"))
                continue
            for index, item in enumerate(value):
                _value(item, field, f"{path}[{index}]", problems)
        else:
            _value(value, field, path, problems)


def _unknown(key: Any, descriptor: Descriptor, prefix: str) -> str:
    names = [f.name for f in descriptor.fields]
    where = prefix.rstrip(".") or "the request"
    close = difflib.get_close_matches(str(key)[:100], names, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    return f"unknown field ({hint}{where} has: {', '.join(names)})"


def _is_map(field: FieldDescriptor) -> bool:
    return bool(
        field.is_repeated
        and field.message_type is not None
        and field.message_type.GetOptions().map_entry
    )


def _map(value: Any, field: FieldDescriptor, path: str, problems: list[tuple[str, str]]) -> None:
    if not isinstance(value, Mapping):
        problems.append((path, f"must be a mapping, not {_kind(value)}"))
        return
    value_field = field.message_type.fields_by_name["value"]
    for key, item in value.items():
        _value(item, value_field, f"{path}.{_key(key)}", problems)


def _value(value: Any, field: FieldDescriptor, path: str, problems: list[tuple[str, str]]) -> None:
    """One value against one (non-repeated) field type."""
    cpp = field.cpp_type
    reason = None
    if cpp == FieldDescriptor.CPPTYPE_MESSAGE:
        if isinstance(value, Mapping):
            _walk(value, field.message_type, f"{path}.", problems)
        else:
            reason = f"must be a mapping, not {_kind(value)}"
    elif cpp == FieldDescriptor.CPPTYPE_STRING:
        reason = _text_problem(value)
    elif cpp == FieldDescriptor.CPPTYPE_BOOL:
        reason = None if isinstance(value, bool) else f"must be true or false, not {_shown(value)}"
    elif cpp in _FLOATS:
        reason = _number_problem(value)
    elif cpp in _INTEGER_RANGES:
        reason = _integer_problem(value, *_INTEGER_RANGES[cpp])
    elif cpp == FieldDescriptor.CPPTYPE_ENUM:
        names = [v.name for v in field.enum_type.values]
        if value not in names:
            reason = f"must be one of {', '.join(names)}, not {_shown(value)}"
    if reason is not None:
        problems.append((path, reason))


def _text_problem(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"must be text, not {_kind(value)}"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        lone = f"\\u{ord(value[exc.start]):04x}"
        return (
            f"not valid text: a lone UTF-16 surrogate ({lone}) at character {exc.start}; "
            "an emoji needs both halves of its pair, or write the character itself"
        )
    return None


def _number_problem(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return f"must be a number, not {_kind(value)}"
    if isinstance(value, int) and abs(value) > sys.float_info.max:
        return "must be a number a double can hold"
    if isinstance(value, str) and value not in _FLOAT_WORDS:
        try:
            float(value)
        except ValueError:
            return f"must be a number, not {_shown(value)}"
    return None


def _integer_problem(value: Any, low: int, high: int) -> str | None:
    whole: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        whole = value
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        whole = int(value)
    elif isinstance(value, str):
        try:
            whole = int(value)
        except ValueError:
            whole = None
    if whole is None or not low <= whole <= high:
        return f"must be a whole number from {low} to {high}, not {_shown(value)}"
    return None


def _kind(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return _shown(value)


def _key(key: Any) -> str:
    """A key as a path element: as written if it is short text, else quoted and cut."""
    return key if isinstance(key, str) and len(key) <= 60 else _shown(key)


def _shown(value: Any, limit: int = 60) -> str:
    """A value quoted in a message, cut short: a problem names a field, it does not echo
    a megabyte back to the terminal."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}...({len(text)} characters)"


def field_sizes(message: Message, prefix: str = "") -> list[tuple[str, int]]:
    """Each leaf field's share of the encoded message, in bytes, largest first: what to
    name when a request is over the API's message size limit."""
    sizes: list[tuple[str, int]] = []
    total = message.ByteSize()
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        if field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE and not field.is_repeated:
            sizes += field_sizes(value, f"{path}.")
            continue
        without = type(message)()
        without.CopyFrom(message)
        without.ClearField(field.name)
        sizes.append((path, total - without.ByteSize()))
    return sorted(sizes, key=lambda item: -item[1])


def size_problem(request: Message, limit: int) -> str | None:
    """None when the encoded request fits in `limit` bytes; otherwise which fields make
    it too large (the largest, and any other over a tenth of the limit)."""
    total = request.ByteSize()
    if total <= limit:
        return None
    sizes = field_sizes(request)
    named = [sizes[0], *(item for item in sizes[1:] if item[1] > limit // 10)]
    fields = ", ".join(f"{path} is {_bytes(size)}" for path, size in named)
    return (
        f"{fields}: the request is {_bytes(total)}, over the {_bytes(limit)} the API "
        f"accepts in one message; shorten {named[0][0]}"
    )


def _bytes(size: int) -> str:
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):.1f} MiB ({size} bytes)"
    return f"{size} bytes"
