"""OpenAPI v3 structural schemas as Kubernetes applies them to custom resources.

The CRDs in ``crds/`` are the one definition of pot's API. Three places must
enforce them the same way: the embedded API server (it stands in for
kube-apiserver), the operator (defence in depth: a task may come from a
cluster whose CRD is older) and the tests that check every example and every
bad spec. So the rules live here, once, as pure functions:

- ``validate(schema, obj)`` returns every violation as a ``Cause`` whose field
  path reads like the real server's (``spec.proof.segmentSteps``,
  ``spec.resources.tolerations[0]``), including the CEL rules in
  ``x-kubernetes-validations`` (evaluated with cel-python);
- ``default(schema, obj)`` fills ``default`` values, only under parents that
  exist, as the apiserver's structural defaulting does;
- ``prune(schema, obj)`` drops fields the schema does not know unless
  ``x-kubernetes-preserve-unknown-fields`` keeps them.

Only the subset of OpenAPI that structural schemas allow is implemented.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import celpy

Schema = Mapping[str, Any]

# Field error reasons, named as in k8s.io/apimachinery's field.ErrorType.
REQUIRED = "FieldValueRequired"
INVALID = "FieldValueInvalid"
NOT_SUPPORTED = "FieldValueNotSupported"
TYPE_INVALID = "FieldValueTypeInvalid"
TOO_LONG = "FieldValueTooLong"
TOO_MANY = "FieldValueTooMany"

_ROOT_META = {"apiVersion", "kind", "metadata"}


@dataclass(frozen=True, slots=True)
class Cause:
    """One violation: where, why (a field.ErrorType name) and a message."""

    field: str
    reason: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message

    def as_status_cause(self) -> dict[str, str]:
        """The shape of ``Status.details.causes[]``."""
        return {"reason": self.reason, "message": str(self), "field": self.field}


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _json(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return str(value)


def _type_ok(kind: str | None, value: Any, schema: Schema) -> bool:
    if kind is None:
        return True
    if schema.get("x-kubernetes-int-or-string") and isinstance(value, int | str):
        return not isinstance(value, bool)
    match kind:
        case "object":
            return isinstance(value, dict)
        case "array":
            return isinstance(value, list)
        case "string":
            return isinstance(value, str)
        case "boolean":
            return isinstance(value, bool)
        case "integer":
            return isinstance(value, int) and not isinstance(value, bool)
        case "number":
            return isinstance(value, int | float) and not isinstance(value, bool)
    return True


def validate(schema: Schema, obj: Any, *, path: str = "", old: Any = None) -> list[Cause]:
    """Every violation of ``schema`` by ``obj``; empty when valid.

    ``old`` is the stored object on an update, for CEL transition rules that
    use ``oldSelf``.
    """
    return list(_validate(schema, obj, path, old, root=not path))


def _validate(
    schema: Schema, value: Any, path: str, old: Any, *, root: bool = False
) -> Iterator[Cause]:
    if value is None:
        if not schema.get("nullable"):
            yield Cause(path, INVALID, "Invalid value: null: must not be null")
        return
    kind = schema.get("type")
    if not _type_ok(kind, value, schema):
        yield Cause(
            path,
            TYPE_INVALID,
            f"Invalid value: {_json(value)}: {path or 'body'} must be of type {kind}",
        )
        return
    problems = list(_check_value(schema, value, path))
    yield from problems
    child_problems: list[Cause] = []
    if isinstance(value, dict):
        child_problems = list(_validate_object(schema, value, path, old, root=root))
    elif isinstance(value, list):
        child_problems = list(_validate_array(schema, value, path, old))
    yield from child_problems
    # CEL rules run on values that are structurally valid beneath them, as the
    # apiserver skips rules whose inputs already failed schema validation.
    if not problems and not child_problems:
        yield from _check_rules(schema, value, path, old)


def _check_value(schema: Schema, value: Any, path: str) -> Iterator[Cause]:
    where = path or "body"
    if "enum" in schema and value not in schema["enum"]:
        supported = ", ".join(_json(v) for v in schema["enum"])
        yield Cause(
            path, NOT_SUPPORTED, f"Unsupported value: {_json(value)}: supported values: {supported}"
        )
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema:
            low = schema["minimum"]
            if schema.get("exclusiveMinimum") and value <= low:
                yield Cause(
                    path,
                    INVALID,
                    f"Invalid value: {value}: {where} in body should be greater than {low}",
                )
            elif value < low:
                yield Cause(
                    path,
                    INVALID,
                    f"Invalid value: {value}: {where} in body should be greater than or equal to {low}",
                )
        if "maximum" in schema:
            high = schema["maximum"]
            if schema.get("exclusiveMaximum") and value >= high:
                yield Cause(
                    path,
                    INVALID,
                    f"Invalid value: {value}: {where} in body should be less than {high}",
                )
            elif value > high:
                yield Cause(
                    path,
                    INVALID,
                    f"Invalid value: {value}: {where} in body should be less than or equal to {high}",
                )
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            yield Cause(
                path,
                INVALID,
                f"Invalid value: {_json(value)}: {where} in body should be at least "
                f"{schema['minLength']} chars long",
            )
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            yield Cause(path, TOO_LONG, f"Too long: may not be longer than {schema['maxLength']}")
        if "pattern" in schema and not _pattern(schema["pattern"]).search(value):
            yield Cause(
                path,
                INVALID,
                f"Invalid value: {_json(value)}: {where} in body should match '{schema['pattern']}'",
            )
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            yield Cause(
                path,
                INVALID,
                f"Invalid value: {len(value)}: {where} in body should have at least "
                f"{schema['minItems']} items",
            )
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            yield Cause(
                path,
                TOO_MANY,
                f"Too many: {len(value)}: must have at most {schema['maxItems']} items",
            )
    if isinstance(value, dict):
        if "minProperties" in schema and len(value) < schema["minProperties"]:
            yield Cause(
                path,
                INVALID,
                f"{where} in body should have at least {schema['minProperties']} properties",
            )
        if "maxProperties" in schema and len(value) > schema["maxProperties"]:
            yield Cause(
                path,
                TOO_MANY,
                f"{where} in body should have at most {schema['maxProperties']} properties",
            )


def _validate_object(
    schema: Schema, value: dict[str, Any], path: str, old: Any, *, root: bool
) -> Iterator[Cause]:
    props: Mapping[str, Schema] = schema.get("properties", {})
    for name in schema.get("required", []):
        if name not in value:
            yield Cause(_join(path, name), REQUIRED, "Required value")
    extra = schema.get("additionalProperties")
    old_map = old if isinstance(old, dict) else {}
    for key, child in value.items():
        if root and key in _ROOT_META and key not in props:
            continue
        child_path = _join(path, key)
        if key in props:
            yield from _validate(props[key], child, child_path, old_map.get(key))
        elif isinstance(extra, dict):
            yield from _validate(extra, child, child_path, old_map.get(key))


def _validate_array(schema: Schema, value: list[Any], path: str, old: Any) -> Iterator[Cause]:
    items = schema.get("items")
    if isinstance(items, dict):
        for i, item in enumerate(value):
            yield from _validate(items, item, f"{path}[{i}]", None)
    if schema.get("uniqueItems") or schema.get("x-kubernetes-list-type") == "set":
        seen: list[Any] = []
        for i, item in enumerate(value):
            if item in seen:
                yield Cause(
                    f"{path}[{i}]", "FieldValueDuplicate", f"Duplicate value: {_json(item)}"
                )
            seen.append(item)
    if schema.get("x-kubernetes-list-type") == "map":
        keys = schema.get("x-kubernetes-list-map-keys", [])
        seen_keys: list[tuple[Any, ...]] = []
        for i, item in enumerate(value):
            if isinstance(item, dict):
                k = tuple(item.get(key) for key in keys)
                if k in seen_keys:
                    yield Cause(
                        f"{path}[{i}]",
                        "FieldValueDuplicate",
                        f"Duplicate value: {dict(zip(keys, k, strict=True))}",
                    )
                seen_keys.append(k)


@lru_cache(maxsize=512)
def _pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


@lru_cache(maxsize=512)
def _program(rule: str) -> celpy.Runner:
    env = celpy.Environment()
    return env.program(env.compile(rule))


def _check_rules(schema: Schema, value: Any, path: str, old: Any) -> Iterator[Cause]:
    for rule_spec in schema.get("x-kubernetes-validations", []):
        rule = rule_spec["rule"]
        uses_old = "oldSelf" in rule
        if uses_old and old is None:
            continue  # transition rules only apply to updates (KEP-2876)
        activation = {"self": celpy.json_to_cel(value)}
        if uses_old:
            activation["oldSelf"] = celpy.json_to_cel(old)
        field = path + rule_spec.get("fieldPath", "") if rule_spec.get("fieldPath") else path
        field = field.lstrip(".")
        try:
            ok = _program(rule).evaluate(activation)
        except Exception as exc:  # noqa: BLE001 (celpy raises many unrelated types)
            yield Cause(
                field, INVALID, f"Invalid value: rule {rule!r} could not be evaluated: {exc}"
            )
            continue
        if isinstance(ok, celpy.CELEvalError):
            yield Cause(
                field, INVALID, f"Invalid value: rule {rule!r} could not be evaluated: {ok}"
            )
        elif not bool(ok):
            message = rule_spec.get("message") or f"failed rule: {rule}"
            yield Cause(
                field, rule_spec.get("reason", INVALID), f"Invalid value: {_json(value)}: {message}"
            )


def default(schema: Schema, obj: Any) -> Any:
    """A copy of ``obj`` with schema defaults filled in (only under present parents)."""
    return _default(schema, copy.deepcopy(obj))


def _default(schema: Schema, value: Any) -> Any:
    if isinstance(value, dict):
        for key, child in schema.get("properties", {}).items():
            if key not in value and "default" in child:
                value[key] = copy.deepcopy(child["default"])
            if key in value:
                value[key] = _default(child, value[key])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in value:
                if key not in schema.get("properties", {}):
                    value[key] = _default(extra, value[key])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_default(schema["items"], item) for item in value]
    return value


def prune(schema: Schema, obj: Any, *, root: bool = True) -> Any:
    """A copy of ``obj`` without the fields ``schema`` does not specify."""
    return _prune(schema, copy.deepcopy(obj), root=root)


def _prune(schema: Schema, value: Any, *, root: bool = False) -> Any:
    if isinstance(value, dict):
        if schema.get("x-kubernetes-embedded-resource"):
            root = True
        props: Mapping[str, Schema] = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        keep_unknown = bool(schema.get("x-kubernetes-preserve-unknown-fields")) or extra is True
        for key in list(value):
            if key in props:
                value[key] = _prune(props[key], value[key])
            elif isinstance(extra, dict):
                value[key] = _prune(extra, value[key])
            elif root and key in _ROOT_META:
                continue
            elif not keep_unknown:
                del value[key]
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_prune(schema["items"], item) for item in value]
    return value


def crd_schema(crd: Mapping[str, Any], version: str) -> Schema:
    """The openAPIV3Schema of ``version`` in a CustomResourceDefinition."""
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            schema: Schema = v["schema"]["openAPIV3Schema"]
            return schema
    raise KeyError(f"{crd['metadata']['name']} has no version {version}")


def admit(schema: Schema, obj: Any, *, old: Any = None) -> tuple[Any, list[Cause]]:
    """What the apiserver does on create/update: prune, default, then validate."""
    cleaned = default(schema, prune(schema, obj))
    return cleaned, validate(schema, cleaned, old=old)
