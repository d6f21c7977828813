"""YAML loading for scene and config files: YAML 1.2 core schema, a position for every value.

Only the YAML 1.2 core scalars are recognised (null, true/false, ints, floats), so what
staff write stays what is sent: `ON`, `yes`, `1:30` and `2024-05-01` remain text, and
the source text of every scalar is kept (`message: 0172` is sent as "0172"). Values are
built from the composed node graph by this module, never by PyYAML's constructors, so
no tag can construct an object; aliases are bounded by counting the expanded values
before anything is built.
"""

from __future__ import annotations

import math
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import yaml
from yaml.composer import Composer
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from runner.errors import Diagnostic, Severity, ValidationFailed
from runner.errors import TagError as TagError  # noqa: PLC0414 - re-exported
from runner.yamlsyntax import syntax_diagnostic

JsonPath = tuple[str | int, ...]

MAX_FILE_BYTES = 4 * 1024 * 1024  # a scene of 10,000 actions is well under 1 MiB
MAX_VALUES = 200_000  # values after alias expansion: refuses "billion laughs" documents
MAX_DEPTH = 64  # nesting of lists and mappings

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_SEQ = "tag:yaml.org,2002:seq"
_MAP = "tag:yaml.org,2002:map"


_CORE_SCALAR = re.compile(
    r"(?P<null>~|null|Null|NULL|)"
    r"|(?P<bool>true|True|TRUE|false|False|FALSE)"
    r"|(?P<int>[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)"
    r"|(?P<float>[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))"
)
_CORE_TAGS = {"null": _NULL, "bool": _BOOL, "int": _INT, "float": _FLOAT}


class CoreResolver(Resolver):
    """Implicit types of the YAML 1.2 core schema, and nothing else (no 1.1 yes/on/sexagesimal).

    One regular expression instead of PyYAML's per-first-character lists: the resolver
    runs for every node, and this is its hot path.
    """

    yaml_implicit_resolvers: ClassVar[dict[Any, Any]] = {}  # type: ignore[misc]

    def resolve(self, kind: type, value: Any, implicit: tuple[bool, bool]) -> str:
        if kind is ScalarNode:
            if implicit[0]:  # plain (unquoted) scalars only
                m = _CORE_SCALAR.fullmatch(value)
                if m is not None and m.lastgroup is not None:
                    return _CORE_TAGS[m.lastgroup]
            return _STR
        return _SEQ if kind is SequenceNode else _MAP


class _PyComposer(Reader, Scanner, Parser, Composer, CoreResolver):
    """The pure-Python parser, used when PyYAML was built without libyaml."""

    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        CoreResolver.__init__(self)


try:
    # libyaml: the same nodes and marks, several times faster than the Python parser.
    from yaml._yaml import CParser

    class _CComposer(CParser, CoreResolver):
        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            CoreResolver.__init__(self)

    _Composer: type = _CComposer
    LIBYAML = True
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    _Composer = _PyComposer
    LIBYAML = False


class Position(NamedTuple):
    """1-based line and column in a source file (a tuple: made for every value, so cheap)."""

    line: int
    col: int


TagHandler = Callable[[str], Any]


@dataclass
class Document:
    """A loaded YAML file: plain values plus where each one came from."""

    file: str
    value: Any
    positions: dict[JsonPath, Position] = field(default_factory=dict)
    key_positions: dict[JsonPath, Position] = field(default_factory=dict)
    texts: dict[JsonPath, str] = field(default_factory=dict)  # source text of scalars
    secret_paths: set[JsonPath] = field(default_factory=set)
    # The loader's own errors (refused tags, duplicate keys), kept when loaded `partial`,
    # and where a refused value left None in its place.
    problems: list[Diagnostic] = field(default_factory=list)
    refused: set[str] = field(default_factory=set)

    def position(self, path: JsonPath, *, key: bool = False) -> Position:
        """Where `path` starts (its key when `key`); the nearest known ancestor otherwise."""
        if key and path in self.key_positions:
            return self.key_positions[path]
        p = path
        while p:
            if p in self.positions:
                return self.positions[p]
            p = p[:-1]
        return self.positions.get((), Position(1, 1))

    def where(self, path: JsonPath) -> str:
        pos = self.position(path)
        return f"{self.file}:{pos.line}:{pos.col}"

    def text(self, path: JsonPath) -> str | None:
        """The scalar at `path` exactly as written (quotes removed)."""
        return self.texts.get(path)

    def is_secret(self, path: JsonPath) -> bool:
        return any(path[: len(s)] == s for s in self.secret_paths)

    def with_problems(self, found: list[Diagnostic]) -> list[Diagnostic]:
        """The loader's problems plus the checks' `found`, less those about a value the
        loader refused (a refused `!tag` is None to the checks: "not nothing" says nothing)."""
        return [*self.problems, *(d for d in found if d.json_path not in self.refused)]

    def diagnostic(self, path: JsonPath, message: str, *, key: bool = False,
                   severity: Severity = Severity.ERROR) -> Diagnostic:
        pos = self.position(path, key=key)
        return Diagnostic(self.file, pos.line, pos.col, message, json_path(path), severity)


_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def json_path(path: JsonPath) -> str:
    """`("actions", 0, "topic")` → `$.actions[0].topic`."""
    out = ["$"]
    for part in path:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif _IDENT.match(part):
            out.append(f".{part}")
        else:
            out.append(f"[{part!r}]")
    return "".join(out)


def load_file(path: Path, *, tags: Mapping[str, TagHandler] | None = None,
              display: str | None = None, partial: bool = False) -> Document:
    """Read and load one YAML file; raises ValidationFailed with every problem found.

    `partial`: a document that parses is returned even with refused tags or duplicate
    keys, those in `problems`, so its other values can be checked in the same run.
    """
    name = display if display is not None else str(path)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode) and not stat.S_ISDIR(info.st_mode):
            # Reading a pipe or /dev/zero would wait, or fill memory, forever.
            raise ValidationFailed([Diagnostic(
                name, 0, 0, "this is not a regular file (a pipe or a device?); give the "
                "path of a YAML file")])
        size = info.st_size
        if size > MAX_FILE_BYTES:
            raise ValidationFailed([Diagnostic(
                name, 1, 1, f"the file is {size} bytes; files over {MAX_FILE_BYTES} bytes "
                "are refused (is it really a scene?)")])
        data = path.read_bytes()
    except IsADirectoryError:
        raise ValidationFailed([Diagnostic(
            name, 0, 0, "this is a folder, not a YAML file")]) from None
    except FileNotFoundError:
        raise ValidationFailed([Diagnostic(
            name, 0, 0, "no such file: check the name and the folder you run from")]) from None
    except OSError as e:
        raise ValidationFailed([Diagnostic(
            name, 0, 0, f"cannot read the file: {e.strerror}")]) from None
    return load_bytes(data, name, tags=tags, partial=partial)


def load_bytes(data: bytes, file: str, *, tags: Mapping[str, TagHandler] | None = None,
               partial: bool = False) -> Document:
    """Decode UTF-8 (a BOM is allowed) and load; non-UTF-8 bytes are an error at their line."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise ValidationFailed([Diagnostic(
            file, line, col,
            f"the file is not UTF-8 text (byte 0x{data[e.start]:02x} here); "
            "save it as UTF-8 in your editor")]) from None
    return load_text(text, file, tags=tags, partial=partial)


def load_text(text: str, file: str, *, tags: Mapping[str, TagHandler] | None = None,
              pure: bool = False, partial: bool = False) -> Document:
    """Load YAML text with the core schema; raises ValidationFailed listing every problem.

    `pure` uses PyYAML's Python parser even where libyaml is available (tests, benchmark);
    `partial` as in `load_file`.
    """
    node = _compose(text, file, _PyComposer if pure else _Composer)
    if node is None or (isinstance(node, ScalarNode) and node.tag == _NULL and not node.value):
        raise ValidationFailed([Diagnostic(
            file, 1, 1, "the file is empty: it holds no YAML keys")])
    if "*" in text:  # without an alias indicator nothing can expand
        _check_size(node, file)
    builder = _Builder(file, dict(tags or {}))
    value = builder.build(node, (), 0)
    if not partial and any(d.severity is Severity.ERROR for d in builder.errors):
        raise ValidationFailed(builder.errors)
    builder.doc.value = value
    builder.doc.problems = builder.errors
    return builder.doc


def _compose(text: str, file: str, composer: type) -> Node | None:
    try:
        loader = composer(text)
        try:
            return loader.get_single_node()  # type: ignore[no-any-return]
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as e:
        raise ValidationFailed([syntax_diagnostic(e, text, file)]) from None
    except yaml.reader.ReaderError as e:
        line, col = _line_col(text, e.position)
        raise ValidationFailed([Diagnostic(
            file, line, col,
            f"character U+{_codepoint(e.character):04X} is not allowed in YAML; delete it "
            "(it is often pasted in invisibly)")]) from None
    except RecursionError:
        raise ValidationFailed([Diagnostic(
            file, 1, 1, "the document is nested too deeply to be a scene or config")]) from None


def _codepoint(character: object) -> int:
    return character if isinstance(character, int) else ord(str(character)[:1] or "\0")


def _line_col(text: str, index: int) -> tuple[int, int]:
    index = max(0, min(index, len(text)))
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def _check_size(root: Node, file: str) -> None:
    """Count values after alias expansion without expanding: linear in the node graph."""
    sizes: dict[int, int] = {}
    in_progress: set[int] = set()

    def size(node: Node, depth: int) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in in_progress:
            raise ValidationFailed([_at(node, file, "an alias refers to the list or mapping "
                                                  "that contains it; remove the *alias")])
        if depth > MAX_DEPTH:
            raise ValidationFailed([_at(node, file, f"nested more than {MAX_DEPTH} levels "
                                                  "deep; that is not a scene or config")])
        in_progress.add(key)
        total = 1
        if isinstance(node, SequenceNode):
            total += sum(size(child, depth + 1) for child in node.value)
        elif isinstance(node, MappingNode):
            total += sum(size(k, depth + 1) + size(v, depth + 1) for k, v in node.value)
        in_progress.discard(key)
        sizes[key] = total
        if total > MAX_VALUES:
            raise ValidationFailed([_at(
                root, file, f"the document expands to more than {MAX_VALUES} values through "
                "aliases (*name); refused (a 'billion laughs' document?)")])
        return total

    size(root, 0)


def _at(node: Node, file: str, message: str) -> Diagnostic:
    return Diagnostic(file, node.start_mark.line + 1, node.start_mark.column + 1, message)


class _Builder:
    """Turns nodes into plain values, recording positions, source text and problems."""

    def __init__(self, file: str, tags: dict[str, TagHandler]) -> None:
        self.doc = Document(file, None)
        self.tags = tags
        self.errors: list[Diagnostic] = []

    def error(self, node: Node, path: JsonPath, message: str) -> None:
        m = node.start_mark
        self.errors.append(Diagnostic(self.doc.file, m.line + 1, m.column + 1, message,
                                      json_path(path)))

    def refuse(self, node: Node, path: JsonPath, message: str) -> None:
        """An error whose value is left out: None stands in its place."""
        self.error(node, path, message)
        self.doc.refused.add(json_path(path))

    def build(self, node: Node, path: JsonPath, depth: int) -> Any:
        self.doc.positions[path] = Position(node.start_mark.line + 1, node.start_mark.column + 1)
        tag = node.tag
        if isinstance(node, ScalarNode):
            self.doc.texts[path] = node.value
            if not node.style and node.value[-1:] in ('"', "'"):
                self.stray_quote(node, path)
            if tag in self.tags:
                try:
                    value = self.tags[tag](node.value)
                except TagError as e:
                    self.refuse(node, path, str(e))
                    return None
                self.doc.secret_paths.add(path)
                return value
            return self.scalar(node, path)
        if tag in self.tags:
            self.refuse(node, path, f"{tag} takes a single name, e.g. `{tag} mqtt_password`")
            return None
        if isinstance(node, SequenceNode):
            if tag != _SEQ:
                self.error(node, path, self.unknown_tag(node))
            return [self.build(child, (*path, i), depth + 1) for i, child in enumerate(node.value)]
        if isinstance(node, MappingNode):
            if tag != _MAP:
                self.error(node, path, self.unknown_tag(node))
            return self.mapping(node, path, depth)
        raise AssertionError(f"unexpected YAML node {node!r}")  # pragma: no cover

    def stray_quote(self, node: ScalarNode, path: JsonPath) -> None:
        """Warn about `message: ON"`: a closing quote with no opening one is sent as text."""
        q = node.value[-1]
        if node.value.count(q) % 2 == 0:  # `say "hi"`: the quote is closed within the text
            return
        m = node.end_mark  # just after the quote
        self.errors.append(Diagnostic(
            self.doc.file, m.line + 1, m.column, f"this value ends with a {q} that has no "
            f"opening {q}, so the {q} is sent as part of it: remove it, or put a {q} at the "
            "start of the value too", json_path(path), Severity.WARNING))

    def unknown_tag(self, node: Node) -> str:
        """The sentence for a tag that is not ours (such a value is never constructed)."""
        tag = node.tag.replace("tag:yaml.org,2002:", "!!")
        allowed = ", ".join(sorted(self.tags)) or "none in this file"
        return f"tag {tag} is not allowed (refused, never constructed); allowed tags: {allowed}"

    def mapping(self, node: MappingNode, path: JsonPath, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag not in (
                _STR, _INT, _FLOAT, _BOOL, _NULL
            ):
                self.error(key_node, path, "a key must be a plain word, not a list, "
                                           "mapping or tagged value")
                continue
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in first_line:
                self.error(key_node, (*path, key),
                           f"duplicate key '{key}' (first on line {first_line[key]}); "
                           "remove one of them")
                continue
            first_line[key] = line
            kpath = (*path, key)
            self.doc.key_positions[kpath] = Position(line, key_node.start_mark.column + 1)
            out[key] = self.build(value_node, kpath, depth + 1)
        return out

    def scalar(self, node: ScalarNode, path: JsonPath) -> Any:
        text, tag = node.value, node.tag
        try:
            if tag in (_STR, "!"):
                return text
            if tag == _NULL:
                return None
            if tag == _BOOL:
                if text.lower() not in ("true", "false"):
                    raise ValueError
                return text.lower() == "true"
            if tag == _INT:
                t = text
                if t.startswith("0o"):
                    return int(t[2:], 8)
                return int(t, 16) if t.startswith("0x") else int(t, 10)
            if tag == _FLOAT:
                low = text.lower()
                if low.lstrip("+-") == ".inf":
                    return -math.inf if low.startswith("-") else math.inf
                if low == ".nan":
                    return math.nan
                return float(text)
        except ValueError:
            self.refuse(node, path, f"{text!r} is not a valid {tag.rsplit(':', 1)[-1]}")
            return None
        self.refuse(node, path, self.unknown_tag(node))
        return None
