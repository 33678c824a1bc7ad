"""Tests for the `where` expression parser and its SQLAlchemy translation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from federation.errors import ExpressionError
from federation.registry.where import compile_where, parse_where

HOSTILE = "x' OR 1=1; DROP TABLE t; --"
EXAMPLE = "instrument = 'HSC' AND visit IN (903334..903338) AND band = 'r'"

metadata = sa.MetaData()
visit_table = sa.Table(
    "t",
    metadata,
    sa.Column("instrument", sa.String, nullable=False),
    sa.Column("visit", sa.Integer, nullable=False),
    sa.Column("detector", sa.Integer, nullable=False),
    sa.Column("band", sa.String, nullable=False),
    sa.Column("seeing", sa.Float, nullable=False),
    sa.Column("offset", sa.Integer, nullable=False),
    sa.Column("exposure", sa.Integer, nullable=False),
)
exposure_table = sa.Table(
    "exposure",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("observation_type", sa.String, nullable=False),
)
HSC = list(range(903330, 903341))


@pytest.fixture(scope="module")
def engine() -> Iterator[sa.Engine]:
    engine = sa.create_engine("sqlite://")
    metadata.create_all(engine)
    rows: list[dict[str, Any]] = []
    for visit in HSC:
        for detector in (0, 1):
            rows.append(dict(instrument="HSC", visit=visit, detector=detector,
                             band="r" if visit % 2 == 0 else "i",
                             seeing=(visit - 903330) * 0.25, offset=visit - 903335,
                             exposure=visit))
    for visit in (1, 2, 3):
        rows.append(dict(instrument="LSSTCam", visit=visit, detector=0, band="g",
                         seeing=1.0, offset=0, exposure=visit))
    rows.append(dict(instrument=HOSTILE, visit=7, detector=0, band="g", seeing=1.0,
                     offset=0, exposure=7))
    types = {v: "science" for v in [*HSC, 1, 2, 3, 7]} | {903336: "flat", 2: "bias"}
    with engine.begin() as conn:
        conn.execute(visit_table.insert(), rows)
        conn.execute(exposure_table.insert(),
                     [dict(id=k, observation_type=v) for k, v in types.items()])
    yield engine
    engine.dispose()


def resolve(name: str, field: str | None) -> sa.ColumnElement[Any]:
    """Map `dimension` / `dimension.field` to columns, like the registry does."""
    if field is None and name in visit_table.c:
        return visit_table.c[name]
    if name == "exposure" and field in exposure_table.c:
        return exposure_table.c[field]
    label = name if field is None else f"{name}.{field}"
    raise ExpressionError(f"unknown dimension or field {label!r}")


def statement(text: str, bind: dict[str, Any] | None = None) -> sa.Select[Any]:
    cond = compile_where(text, resolve, bind)
    assert cond is not None
    joined = visit_table.join(exposure_table, visit_table.c.exposure == exposure_table.c.id)
    return sa.select(visit_table.c.visit, visit_table.c.detector).select_from(joined).where(cond)


def rows(engine: sa.Engine, text: str, bind: dict[str, Any] | None = None) -> set[tuple]:
    with engine.connect() as conn:
        return {tuple(r) for r in conn.execute(statement(text, bind))}


def visits(engine: sa.Engine, text: str, bind: dict[str, Any] | None = None) -> set[int]:
    return {visit for visit, _ in rows(engine, text, bind)}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (EXAMPLE, {903334, 903336, 903338}),
        ("visit IN (903330..903340:3)", {903330, 903333, 903336, 903339}),
        ("visit IN (903330..903332:1)", {903330, 903331, 903332}),
        ("visit IN (1, 903330..903334:2, 3)", {1, 3, 903330, 903332, 903334}),
        ("visit IN (903335..903335)", {903335}),
        ("instrument = 'HSC' AND visit NOT IN (903331..903339)", {903330, 903340}),
        ("visit NOT IN (903330..903340, 1, 2)", {3, 7}),
        # AND binds tighter than OR; NOT tighter than AND.
        ("visit = 903330 OR visit = 903331 AND band = 'i'", {903330, 903331}),
        ("(visit = 903330 OR visit = 903331) AND band = 'i'", {903331}),
        ("NOT band = 'r' AND instrument = 'HSC'", {v for v in HSC if v % 2}),
        ("NOT (band = 'r' OR band = 'i')", {1, 2, 3, 7}),
        ("NOT NOT band = 'g' AND visit < 3", {1, 2}),
        # Value on the left flips the comparison.
        ("903335 < visit", {903336, 903337, 903338, 903339, 903340}),
        ("903332 >= visit AND instrument = 'HSC'", {903330, 903331, 903332}),
        ("'LSSTCam' = instrument", {1, 2, 3}),
        ("visit != 903330 AND visit <> 903331 AND visit > 903329", set(HSC[2:])),
        # Float and negative literals.
        ("seeing > 2.1", {903339, 903340}),
        ("seeing >= 2.5e0", {903340}),
        ("seeing > -2e3 AND instrument = 'LSSTCam'", {1, 2, 3}),
        ("offset <= -3", {903330, 903331, 903332}),
        ("offset IN (-5..-4, 5)", {903330, 903331, 903340}),
        ('band = "r" AND instrument = "HSC" AND visit < 903333', {903330, 903332}),
        # Case-insensitive keywords; names merely starting with a keyword.
        ("instrument = 'HSC' and visit in (903330..903333) AnD NoT band = 'r'", {903331, 903333}),
        ("visit not in (903330..903340) or visit = 903330", {1, 2, 3, 7, 903330}),
        # dimension.field resolution through the resolver.
        ("exposure.observation_type = 'flat'", {903336}),
        ("exposure.observation_type != 'science'", {2, 903336}),
        ("exposure = 2", {2}),
    ],
)
def test_selects(engine: sa.Engine, text: str, expected: set[int]) -> None:
    assert visits(engine, text) == expected


def test_identifier_vs_identifier(engine: sa.Engine) -> None:
    expected = {(v, d) for v in HSC for d in (0, 1) if v - 903335 > d}
    assert rows(engine, "offset > detector") == expected
    assert rows(engine, "detector < offset") == expected


def test_bind_parameters(engine: sa.Engine) -> None:
    assert visits(engine, "visit = :v", {"v": 903333}) == {903333}
    assert visits(engine, "instrument = :inst", {"inst": "LSSTCam"}) == {1, 2, 3}
    assert visits(engine, "visit IN (:ids)", {"ids": [1, 3, 903340]}) == {1, 3, 903340}
    assert visits(engine, "visit IN (:ids)", {"ids": (2,)}) == {2}
    assert visits(engine, "visit IN (:ids, 903330..903331)", {"ids": {1}}) == {1, 903330, 903331}
    assert visits(engine, "visit NOT IN (:ids) AND visit < 10", {"ids": [1, 2]}) == {3, 7}
    assert visits(engine, "visit IN (:lo..:hi:2)", {"lo": 903330, "hi": 903334}) == {
        903330, 903332, 903334}
    assert visits(engine, "visit IN (:ids)", {"ids": []}) == set()


def test_empty_text_gives_none() -> None:
    assert compile_where(None, resolve) is None
    assert compile_where("", resolve) is None
    assert compile_where("  \t\n", resolve) is None


def test_parse_where_returns_tree() -> None:
    assert parse_where(EXAMPLE) is not None
    # Names that merely start with a keyword are identifiers.
    assert parse_where("order = 1 AND android = 2 OR note = 3 AND inx = 4 AND in_x = 5")


def test_long_chains(engine: sa.Engine) -> None:
    text = " OR ".join(f"visit = {v}" for v in range(3000)) + " OR visit = 903330"
    assert str(statement(text))  # long chains compile flat, without Python recursion
    text = " OR ".join(f"visit = {v}" for v in range(500)) + " OR visit = 903330"
    assert visits(engine, text) == {1, 2, 3, 7, 903330}
    exc = error("NOT " * 5000 + "visit = 1")
    assert "nested too deeply" in str(exc)


def test_thousands_of_alternatives_run_on_sqlite(engine: sa.Engine) -> None:
    """SQLite refuses expression trees deeper than 1000; a flat OR of 5,000 is one."""
    ors = " OR ".join(f"visit = {v}" for v in range(5000)) + " OR visit = 903330"
    assert visits(engine, ors) == {1, 2, 3, 7, 903330}
    # Equalities on one column, mixed with other terms, merge into one IN list.
    mixed = " OR ".join(f"visit = {v} OR detector = 5" for v in range(2, 5000)) \
        + " OR visit IN (903331..903332) OR band = 'g'"
    assert visits(engine, mixed) == {1, 2, 3, 7, 903331, 903332}
    # What cannot be merged is grouped into a shallow tree.
    pairs = " OR ".join(f"(visit = {v} AND detector = {v % 2})" for v in range(903000, 904500))
    assert rows(engine, pairs) == {(v, v % 2) for v in HSC}
    ands = " AND ".join(f"visit != {v}" for v in range(10, 1500))
    assert visits(engine, ands) == {1, 2, 3, 7, *HSC}
    assert visits(engine, f"NOT ({ors})") == set(HSC) - {903330}


def test_merged_alternatives_keep_their_meaning(engine: sa.Engine) -> None:
    assert visits(engine, "visit = 1 OR band = 'r' OR visit = 903331 OR visit IN (2, :more)",
                  {"more": [3]}) == {1, 2, 3, 903331, *[v for v in HSC if v % 2 == 0]}
    assert visits(engine, "visit IN (903330..903334:2) OR visit = 3 OR NOT visit > 2") == {
        1, 2, 3, 903330, 903332, 903334}
    assert rows(engine, "visit = :v OR (visit = 903335 AND detector = 1) OR visit = 903336",
                {"v": 7}) == {(7, 0), (903335, 1), (903336, 0), (903336, 1)}


@pytest.mark.parametrize("text", ["visit = 9223372036854775808", "visit > -9223372036854775809",
                                  "visit IN (1, 99999999999999999999)",
                                  "visit IN (1..9223372036854775808)", "visit = :big",
                                  "visit = '9223372036854775808'"])
def test_integers_beyond_64_bits_are_refused(engine: sa.Engine, text: str) -> None:
    exc = error(text, {"big": 2**64})
    assert "is out of range for a 64-bit integer" in str(exc)
    assert "\n" not in str(exc)
    assert visits(engine, "visit = 9223372036854775807 OR visit < -9223372036854775807") == set()


def test_limits_of_one_expression() -> None:
    exc = error("NOT (" * 65 + "visit = 1" + ")" * 65)
    assert str(exc).startswith("where expression is nested too deeply at column ")
    assert "more than 64 levels" in str(exc)
    assert compile_where("NOT (" * 60 + "visit = 1" + ")" * 60, resolve) is not None
    exc = error("visit IN (:many)", {"many": list(range(20_001))})
    assert "more than 20000 values" in str(exc)


def test_hostile_string_is_data(engine: sa.Engine) -> None:
    text = "instrument = 'x'' OR 1=1; DROP TABLE t; --'"
    assert visits(engine, 'instrument = "x\' OR 1=1; DROP TABLE t; --"') == {7}
    assert visits(engine, text) == {7}  # exactly the row whose value is that string
    assert visits(engine, text.replace("x''", "y''")) == set()
    assert sa.inspect(engine).has_table("t")
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(visit_table)).scalar() == 26


@pytest.mark.parametrize(
    ("text", "bind", "secrets"),
    [
        (EXAMPLE, None, ["HSC", "903334", "903338", "'r'"]),
        ("instrument = 'x'' OR 1=1; DROP TABLE t; --'", None, ["DROP", "1=1", "x'"]),
        ("visit IN (903330..903340:3, 424242) AND seeing > 2.125", None,
         ["903330", "903340", "424242", "2.125"]),
        ('band = "zz" OR offset = -17', None, ["zz", "-17"]),
        ("visit IN (:ids) OR instrument = :inst", {"ids": [31337], "inst": "Evil"},
         ["31337", "Evil"]),
    ],
)
def test_values_are_bound(text: str, bind: dict[str, Any] | None, secrets: list[str]) -> None:
    stmt = statement(text, bind)
    for sql in (str(stmt), str(stmt.compile(dialect=postgresql.dialect()))):
        for secret in secrets:
            assert secret not in sql


def error(text: str, bind: dict[str, Any] | None = None) -> ExpressionError:
    with pytest.raises(ExpressionError) as info:
        compile_where(text, resolve, bind)
    exc = info.value
    assert "\n" not in str(exc)
    assert exc.__cause__ is None
    assert exc.text == text  # type: ignore[attr-defined]
    assert isinstance(exc.column, int) and exc.column >= 1  # type: ignore[attr-defined]
    return exc


@pytest.mark.parametrize(
    ("text", "token", "words"),
    [
        (EXAMPLE.replace("AND band", "AND AND band"), "AND band", "expected an expression"),
        ("instrument = AND visit = 1", "AND", "expected a value"),
        ("visit = 1 band = 'r'", "band", "expected AND or OR"),
        ("visit IN 903334", "903334", "expected '('"),
        ("visit = = 3", "= 3", "expected a value"),
        ("visit IN (1, )", ")", "expected a value"),
        ("visit 5", "5", "expected a comparison operator"),
        ("5 IN (1)", "IN", "expected a comparison operator"),
        ("visit NOT 5", "5", "expected IN"),
        ("visit IN (1..3 4)", "4", "expected"),
        ("visit = 1 # 2", "#", "unexpected character"),
    ],
)
def test_syntax_error_points_at_token(text: str, token: str, words: str) -> None:
    exc = error(text)
    column = text.rindex(token) + 1
    assert exc.column == column  # type: ignore[attr-defined]
    assert f"column {column}" in str(exc)
    assert repr(token.split()[0]) in str(exc)
    assert words in str(exc)


@pytest.mark.parametrize(
    ("text", "words"),
    [("visit = 1 AND", "expected an expression"), ("visit =", "expected a value"),
     ("(visit = 1", "')'"), ("visit IN (1, 2", "')'"), ("NOT", "expected an expression")],
)
def test_unexpected_end(text: str, words: str) -> None:
    exc = error(text + "  ")
    assert "unexpected end of expression" in str(exc)
    assert exc.column == len(text) + 1  # type: ignore[attr-defined]
    assert words in str(exc)
    with pytest.raises(ExpressionError, match="unexpected end"):
        parse_where("   ")


@pytest.mark.parametrize("text", ["band = 'r", 'band = "r', "band = 'r'' AND visit = 1"])
def test_unterminated_string(text: str) -> None:
    exc = error(text)
    assert str(exc) == "unterminated string starting at column 8"
    assert exc.column == 8  # type: ignore[attr-defined]


def test_missing_bind() -> None:
    exc = error("visit = 1 OR visit = :v")
    assert ":v" in str(exc) and exc.column == 22  # type: ignore[attr-defined]
    exc = error("visit IN (1, :ids)", {"other": 1})
    assert ":ids" in str(exc) and exc.column == 14  # type: ignore[attr-defined]


def test_list_bind_outside_in() -> None:
    exc = error("visit = :ids", {"ids": [1, 2]})
    assert "IN" in str(exc) and exc.column == 9  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "column", "words"),
    [
        ("visit IN (903338..903334)", 11, "below its start"),
        ("visit IN (1, 1..5:0)", 19, "positive"),
        ("visit IN (1..5:-2)", 16, "positive"),
        ("visit IN (1.5..3)", 11, "integers"),
        ("visit IN ('a'..'b')", 11, "integers"),
        ("visit IN (1..:hi)", 14, "integers"),
    ],
)
def test_bad_range(text: str, column: int, words: str) -> None:
    exc = error(text, {"hi": 2.5})
    assert exc.column == column  # type: ignore[attr-defined]
    assert words in str(exc)


@pytest.mark.parametrize(
    ("text", "column"),
    [("visit", 1), ("visit = 1 AND band", 15), ("5", 1), ("'HSC' OR visit = 1", 1),
     ("exposure.observation_type", 1), ("(visit)", 2)],
)
def test_bare_operand(text: str, column: int) -> None:
    exc = error(text)
    assert "expected a comparison" in str(exc)
    assert exc.column == column  # type: ignore[attr-defined]


def test_literal_vs_literal() -> None:
    exc = error("visit = 1 OR 1 = 1")
    assert "identifier" in str(exc) and exc.column == 14  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "name", "column"),
    [("filter = 'r'", "'filter'", 1), ("visit = 1 AND exposure.nope = 2", "'exposure.nope'", 15),
     ("visit IN (1) OR 3 < colour", "'colour'", 21)],
)
def test_unknown_identifier_from_resolver(text: str, name: str, column: int) -> None:
    exc = error(text)
    assert str(exc) == f"unknown dimension or field {name}"
    assert exc.column == column  # type: ignore[attr-defined]
