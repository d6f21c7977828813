"""JSON Schema checks of loaded documents, jsonschema's messages turned into sentences for staff.

The schemas live in the package `runner.schemas` (the repository's top-level `schemas/`),
so they load from a wheel as well as from a checkout. Each validator is compiled once.
"""

from __future__ import annotations

import difflib
import functools
import json
from collections.abc import Iterable
from importlib.resources import files
from typing import Any

from runner.errors import Diagnostic
from runner.yamlload import Document, JsonPath

SCENE = "scene.schema.json"
CONFIG = "config.schema.json"
_SCHEMAS = (SCENE, CONFIG)


def load_schema(name: str) -> dict[str, Any]:
    """The schema `name` as shipped in the package."""
    text = files("runner.schemas").joinpath(name).read_text(encoding="utf-8")
    return json.loads(text)  # type: ignore[no-any-return]


@functools.cache
def validator(name: str) -> Any:
    """A compiled Draft 2020-12 validator; cached because compiling costs more than checking.

    Its `$ref`s are inlined first: resolving them on every value was 40% of the time.
    """
    # Imported on first use so `runner --help` stays quick.
    from jsonschema import Draft202012Validator  # noqa: PLC0415

    schemas = {n: load_schema(n) for n in _SCHEMAS}
    return Draft202012Validator(inline_refs(schemas[name], name, schemas))


def inline_refs(node: Any, current: str, schemas: dict[str, Any]) -> Any:
    """`node` with every `$ref` to `#/$defs/x` or `other.json#/$defs/x` replaced by its target.

    Our schemas are not recursive, so this ends; keys beside a `$ref` win over the target's.
    """
    if isinstance(node, list):
        return [inline_refs(item, current, schemas) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: inline_refs(v, current, schemas) for k, v in node.items()
           if k not in ("$ref", "$defs")}
    ref = node.get("$ref")
    if isinstance(ref, str):
        file, _, pointer = ref.partition("#")
        file = file or current
        target: Any = schemas[file]
        for part in pointer.strip("/").split("/"):
            target = target[part]
        out = {**inline_refs(target, file, schemas), **out}
    return out


def check(doc: Document, name: str) -> list[Diagnostic]:
    """Every schema problem of `doc`, each at the line of the value (or key) concerned."""
    out: dict[Diagnostic, None] = {}  # jsonschema reports `required` once per missing key
    for error in validator(name).iter_errors(doc.value):
        out.update(dict.fromkeys(_translate(error, doc)))
    return list(out)


MERGE_KEY = ("'<<' merge keys (<<: *name) are YAML 1.1, and files are read as YAML 1.2 so "
             "that what you write is what is sent; write the keys out in each item")

_TYPE_WORDS = {
    "object": "a mapping (key: value)",
    "array": "a list (- item)",
    "string": "text",
    "number": "a number",
    "integer": "a whole number",
    "boolean": "true or false",
    "null": "nothing",
}


def describe(value: Any, secret: bool = False) -> str:
    """A value as staff would name it: `the list [...]`, `the text 'abc'`, `nothing`."""
    if value is None:
        return "nothing (an empty value)"
    if secret:
        return "a secret value"
    if isinstance(value, bool):
        return f"{str(value).lower()}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the text {_short(value)!r}"
    return f"{value!r}"


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def did_you_mean(word: str, choices: Iterable[str], *, cutoff: float = 0.6) -> str:
    """` (did you mean 'x'?)` when a choice is close to `word`, else ``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=cutoff)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _translate(error: Any, doc: Document) -> list[Diagnostic]:
    path: JsonPath = tuple(error.absolute_path)
    schema: dict[str, Any] = error.schema if isinstance(error.schema, dict) else {}
    instance = error.instance
    secret = doc.is_secret(path)
    got = describe(instance, secret)
    kind = error.validator

    if kind == "additionalProperties" and isinstance(instance, dict):
        known = list(schema.get("properties", {}))
        extra = [k for k in instance if k not in known]
        if not known:  # a free-form mapping whose values failed: report those instead
            return [doc.diagnostic(path, error.message if not secret else "invalid value")]
        return [
            doc.diagnostic(
                (*path, key),
                MERGE_KEY if key == "<<" else
                f"unknown key {key!r}{did_you_mean(key, known) or _allowed(known)}",
                key=True,
            )
            for key in extra
        ]
    if kind == "required":
        missing = [k for k in error.validator_value if isinstance(instance, dict)
                   and k not in instance]
        return [doc.diagnostic(path, f"missing required key {k!r}") for k in missing]
    if kind == "oneOf" and "x-oneOf" in schema:
        return [doc.diagnostic(path, schema["x-oneOf"])]
    if kind in ("type", "anyOf", "oneOf", "pattern") and "x-message" in schema:
        return [doc.diagnostic(path, schema["x-message"].replace("{got}", got))]
    if kind == "type":
        types = error.validator_value
        names: list[str] = types if isinstance(types, list) else [types]
        wanted = " or ".join(_TYPE_WORDS.get(t, t) for t in names)
        return [doc.diagnostic(path, f"expected {wanted}, not {got}")]
    if kind == "enum":
        options = [str(o) for o in error.validator_value]
        hint = did_you_mean(instance, options) if isinstance(instance, str) and not secret else ""
        return [doc.diagnostic(path, f"{got} is not one of: {', '.join(options)}{hint}")]
    if kind in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        bound = error.validator_value
        words = {
            "minimum": f"at least {bound}",
            "exclusiveMinimum": f"more than {bound}",
            "maximum": f"at most {bound}",
            "exclusiveMaximum": f"less than {bound}",
        }[kind]
        return [doc.diagnostic(path, f"must be {words}, not {got}")]
    if kind == "minItems":
        return [doc.diagnostic(path, "the list is empty; it needs at least one item")]
    if kind == "minLength":
        return [doc.diagnostic(path, "must not be empty")]
    if kind == "maxLength":
        return [doc.diagnostic(path, f"is too long (at most {error.validator_value} characters)")]
    if kind == "uniqueItems":
        return [doc.diagnostic(path, "lists the same item twice")]
    if kind == "dependentRequired":
        pairs: list[str] = [f"{k!r} needs {', '.join(repr(x) for x in v)} as well"
                 for k, v in error.validator_value.items()
                 if isinstance(instance, dict) and k in instance
                 and any(x not in instance for x in v)]
        return [doc.diagnostic(path, "; ".join(pairs) or error.message)]
    if kind == "pattern":
        return [doc.diagnostic(path, f"{got} does not have the expected form")]
    return [doc.diagnostic(path, "invalid value" if secret else error.message)]


def _allowed(known: list[str]) -> str:
    return f" (allowed keys: {', '.join(known)})"
