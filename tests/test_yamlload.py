"""The YAML loader: 1.2 core scalars, source text, positions, and refusing what is unsafe."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from runner import yamlload
from runner.errors import ValidationFailed
from runner.yamlload import (
    MAX_FILE_BYTES,
    Position,
    TagError,
    load_bytes,
    load_file,
    load_text,
)

BOTH_PARSERS = pytest.mark.parametrize("pure", [False, True], ids=["libyaml", "python"])


def errors_of(text: str, **kw: object) -> list[str]:
    with pytest.raises(ValidationFailed) as info:
        load_text(text, "f.yaml", **kw)  # type: ignore[arg-type]
    return [d.format() for d in info.value.diagnostics]


@BOTH_PARSERS
def test_yaml_1_1_words_stay_text(pure: bool) -> None:
    doc = load_text("a: ON\nb: off\nc: yes\nd: 1:30\ne: 2024-05-01\nf: No\ng: y\n", "f",
                    pure=pure)
    assert doc.value == {"a": "ON", "b": "off", "c": "yes", "d": "1:30",
                         "e": "2024-05-01", "f": "No", "g": "y"}


@BOTH_PARSERS
def test_core_schema_types(pure: bool) -> None:
    doc = load_text("i: 12\nn: -3\nf: 2.5\nx: 0x1f\no: 0o17\nt: true\nF: False\nz: ~\n"
                    "e:\ninf: .inf\nnan: .nan\ns: '12'\n", "f", pure=pure)
    v = doc.value
    assert (v["i"], v["n"], v["f"], v["x"], v["o"]) == (12, -3, 2.5, 31, 15)
    assert v["t"] is True and v["F"] is False and v["z"] is None and v["e"] is None
    assert v["inf"] == math.inf and math.isnan(v["nan"]) and v["s"] == "12"


@BOTH_PARSERS
def test_source_text_of_every_scalar_is_kept(pure: bool) -> None:
    doc = load_text("a: 0172\nb: 1.50\nc: true\nd: \"ON\"\ne: !!str 007\nf: 1e3\n", "f",
                    pure=pure)
    assert doc.value["a"] == 172  # the schema sees a number ...
    texts = {k: doc.text((k,)) for k in "abcdef"}
    # ... and a message is sent exactly as written
    assert texts == {"a": "0172", "b": "1.50", "c": "true", "d": "ON", "e": "007", "f": "1e3"}
    assert doc.value["e"] == "007"


@BOTH_PARSERS
def test_every_value_and_key_has_a_position(pure: bool) -> None:
    doc = load_text("name: x\nactions:\n  - at: 0\n    topic: a/b\n  - {at: 1, topic: c}\n",
                    "f", pure=pure)
    assert doc.position(("actions", 0)) == Position(3, 5)
    assert doc.position(("actions", 0, "topic")) == Position(4, 12)
    assert doc.position(("actions", 0, "topic"), key=True) == Position(4, 5)
    assert doc.position(("actions", 1, "topic")) == Position(5, 20)
    assert doc.position(("actions", 1, "nothing", 3)) == Position(5, 5)  # nearest ancestor
    assert doc.where(("actions", 1)) == "f:5:5"


@BOTH_PARSERS
def test_duplicate_keys_name_both_lines(pure: bool) -> None:
    [err] = errors_of("a: 1\nb:\n  c: 2\n  c: 3\n", pure=pure)
    assert err == ("f.yaml:4:3: error: $.b.c: duplicate key 'c' (first on line 3); "
                   "remove one of them")


@BOTH_PARSERS
@pytest.mark.parametrize("tagged", [
    "!!python/object/apply:os.system ['true']",
    "!!python/name:os.system",
    "!!binary aGVsbG8=",
    "!!timestamp 2024-05-01",
    "!!set {a, b}",
    "!custom x",
    "!secret x",
])
def test_unknown_tags_are_refused(pure: bool, tagged: str) -> None:
    [err] = errors_of(f"a: {tagged}\n", pure=pure)
    assert err.startswith("f.yaml:1:4: error: $.a: tag ") and "is not allowed" in err


def test_libyaml_parser_is_used_where_pyyaml_has_it() -> None:
    assert yamlload.LIBYAML is yaml.__with_libyaml__
    assert yamlload.LIBYAML, "PyYAML without libyaml: validate is several times slower"


def test_a_refused_tag_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    errors_of(f"a: !!python/object/apply:os.system ['touch {marker}']\n")
    errors_of(f"a: !!python/object/new:subprocess.check_call [['touch', '{marker}']]\n")
    assert not marker.exists()


def billion_laughs(levels: int = 9) -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    names = "abcdefghijklmnop"
    for i in range(1, levels):
        lines.append(f"{names[i]}: &{names[i]} [" + ",".join([f"*{names[i - 1]}"] * 9) + "]")
    return "\n".join(lines) + "\n"


@BOTH_PARSERS
def test_alias_bomb_is_refused_quickly(pure: bool) -> None:
    started = time.monotonic()
    [err] = errors_of(billion_laughs(), pure=pure)
    assert time.monotonic() - started < 1.0
    assert "billion laughs" in err


def test_a_few_aliases_are_fine() -> None:
    doc = load_text("safe: &safe {topic: a/b, message: 'OFF'}\nlist: [*safe, *safe]\n", "f")
    assert doc.value["list"] == [{"topic": "a/b", "message": "OFF"}] * 2
    assert doc.text(("list", 1, "message")) == "OFF"


def test_recursive_alias_is_refused() -> None:
    [err] = errors_of("a: &x [1, *x]\n")
    assert "refers to the list or mapping that contains it" in err


def test_deep_nesting_is_refused_without_a_traceback() -> None:
    [err] = errors_of("a: " + "[" * 5000 + "]" * 5000 + "\n")
    assert "f.yaml:1:" in err and ("nested" in err or "nesting" in err)


def test_tab_indentation() -> None:
    [err] = errors_of("a:\n\tb: 1\n")
    assert err.startswith("f.yaml:2:1: error: $: a tab is used for indentation")


@BOTH_PARSERS
def test_an_unclosed_bracket_is_reported_at_the_bracket(pure: bool) -> None:
    [err] = errors_of("a: 1\nb: [1, 2\nc: 3\n", pure=pure)
    assert err.startswith("f.yaml:2:4: error: $: this [ is not closed"), err
    assert "add the closing ]" in err and "line 3" in err


SCENE_HEAD = "name: x\nactions:\n  - at: 0\n    topic: a/b\n    message: ON\n"


@BOTH_PARSERS
@pytest.mark.parametrize("q", ['"', "'"])
def test_an_unclosed_quote_mid_file_is_reported_at_the_quote(pure: bool, q: str) -> None:
    # The quote swallows the next lines up to the next quote; the parser only fails after
    # that one ("did not find expected key" on line 9): point at line 6 instead.
    text = (SCENE_HEAD + f"  - at: 1\n    topic: a/c\n    message: {q}OFF\n"
            f"  - at: 2\n    topic: a/d\n    message: {q}CLOSE{q}\n  - at: 3\n")
    [err] = errors_of(text, pure=pure)
    assert err.startswith(f"f.yaml:8:14: error: $: this {q} is never closed"), err
    assert f"add the closing {q} at the end of the value" in err and "line 11" in err
    assert "did not find" not in err and "block mapping" not in err


@BOTH_PARSERS
@pytest.mark.parametrize("q", ['"', "'"])
def test_an_unclosed_quote_up_to_the_end_is_reported_at_the_quote(pure: bool, q: str) -> None:
    text = SCENE_HEAD + f"  - at: 1\n    topic: a/c\n    message: {q}OFF\n  - at: 2\n"
    [err] = errors_of(text, pure=pure)
    assert err.startswith(f"f.yaml:8:14: error: $: this {q} is never closed"), err
    assert "rest of the file" in err and "end of stream" not in err


def test_a_bad_escape_in_quotes_is_not_called_an_unclosed_quote() -> None:
    [err] = errors_of('a: "x\\q"\n')
    assert "never closed" not in err and err.startswith("f.yaml:1:")
    assert "write \\\\ for a backslash" in err, err


@BOTH_PARSERS
@pytest.mark.parametrize(("text", "col", "way_out"), [
    ("a: 1\nb: 'it's on'\n", 7, "write it twice ('it''s')"),
    ('a: 1\nb: "say "hi""\n', 9, 'write it as \\"'),
])
def test_a_quote_inside_a_quoted_value_is_reported_at_that_quote(
        pure: bool, text: str, col: int, way_out: str) -> None:
    [err] = errors_of(text, pure=pure)
    assert err.startswith(f"f.yaml:2:{col}: error: $: this "), err
    assert "closes the quoted value" in err and way_out in err


def test_a_legit_multiline_quoted_value_is_not_blamed() -> None:
    # A long quoted message wrapped over two lines, then an unrelated indentation error.
    [err] = errors_of('a: "a long\n  message"\nb:\n  c: 1\n d: 2\n')
    assert "never closed" not in err and err.startswith("f.yaml:5:2:"), err


@BOTH_PARSERS
def test_a_missing_colon_is_reported_at_its_line(pure: bool) -> None:
    [err] = errors_of("a: 1\nb\nc: 2\n", pure=pure)
    assert err.startswith("f.yaml:2:1: error: $: this line has no ':'"), err


@BOTH_PARSERS
def test_bad_indentation_in_plain_words(pure: bool) -> None:
    [err] = errors_of("a:\n  b: 1\n c: 2\n", pure=pure)
    assert err.startswith("f.yaml:3:2: error: $: this line is indented differently"), err
    [err] = errors_of("a: b: c\n", pure=pure)
    assert err.startswith("f.yaml:1:5:") and "put the value in quotes" in err


@BOTH_PARSERS
@pytest.mark.parametrize("q", ['"', "'"])
def test_a_value_ending_with_a_stray_quote_is_a_warning(pure: bool, q: str) -> None:
    doc = load_text(f"a: 1\nmessage: ON{q}\n", "f.yaml", pure=pure)
    assert doc.value["message"] == f"ON{q}"  # still loaded: a warning, not an error
    [warning] = [d.format() for d in doc.problems]
    assert warning.startswith(f"f.yaml:2:12: warning: $.message: this value ends with a {q} "
                              f"that has no opening {q}"), warning


@BOTH_PARSERS
@pytest.mark.parametrize("value", ['say "hi"', "'ON'", '"ON"', "it's", "rock 'n' roll'n'",
                                   "|\n  ends with a quote\"", 'a"b', "'it''s'"])
def test_no_stray_quote_warning_for_closed_quotes(pure: bool, value: str) -> None:
    assert load_text(f"message: {value}\n", "f", pure=pure).problems == []


def test_control_character_has_its_line() -> None:
    [err] = errors_of("a: 1\nb: x\x07y\n")
    assert err.startswith("f.yaml:2:5:") and "U+0007" in err


def test_non_utf8_bytes_name_their_line() -> None:
    with pytest.raises(ValidationFailed) as info:
        load_bytes(b"a: 1\nb: gr\xfc\xdf\n", "f.yaml")
    [d] = info.value.diagnostics
    assert (d.line, d.col) == (2, 6) and "0xfc" in d.message and "UTF-8" in d.message


def test_utf8_bom_is_accepted() -> None:
    assert load_bytes("\ufeffa: Grüße\n".encode(), "f").value == {"a": "Grüße"}


def test_oversized_file_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (MAX_FILE_BYTES + 1))
    with pytest.raises(ValidationFailed, match="bytes"):
        load_file(big)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ValidationFailed, match="no such file"):
        load_file(tmp_path / "nope.yaml")
    with pytest.raises(ValidationFailed, match="folder"):
        load_file(tmp_path)


@pytest.mark.parametrize("special", ["fifo", "/dev/zero"])
def test_a_pipe_or_device_is_refused_without_reading(tmp_path: Path, special: str) -> None:
    # `runner validate` hung on a FIFO and filled memory from /dev/zero.
    path = Path(special)
    if special == "fifo":
        path = tmp_path / "scene.yaml"
        os.mkfifo(path)
    with pytest.raises(ValidationFailed, match="not a regular file"):
        load_file(path)


def test_tag_handlers_report_every_failure_at_its_line() -> None:
    def secret(name: str) -> str:
        if name == "known":
            return "s3cr3t"
        raise TagError(f"secret {name!r} is not set")

    doc = load_text("a: !secret known\n", "f", tags={"!secret": secret})
    assert doc.value == {"a": "s3cr3t"} and doc.is_secret(("a",))
    errs = errors_of("a: !secret x\nb: !secret y\n", tags={"!secret": secret})
    assert errs == ["f.yaml:1:4: error: $.a: secret 'x' is not set",
                    "f.yaml:2:4: error: $.b: secret 'y' is not set"]


def test_empty_documents() -> None:
    assert "empty" in errors_of("")[0]
    assert "empty" in errors_of("# comment only\n---\n")[0]


def test_several_documents_are_an_error() -> None:
    [err] = errors_of("a: 1\n---\nb: 2\n")
    assert err.startswith("f.yaml:2:1:") and "single document" in err


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=40))
def test_any_text_written_by_a_yaml_tool_is_sent_exactly(text: str) -> None:
    # PyYAML writes YAML 1.1, which leaves e.g. 0E0 unquoted (a float in 1.2): the value
    # may differ, but the message sent, the source text, never does.
    doc = load_text(yaml.safe_dump({"message": text}, allow_unicode=True), "f")
    assert doc.text(("message",)) == text
