"""Parse user ``where`` expressions and compile them to SQLAlchemy Core.

The language follows the LSST butler's query syntax: comparisons between
dimension identifiers (``visit``, ``exposure.observation_type``) and literals or
``:bind`` parameters, ``IN``/``NOT IN`` lists with inclusive integer ranges
(``903334..903338:2``), combined with ``NOT``, ``AND`` and ``OR``. Every value
is bound as a parameter; nothing the user typed is pasted into SQL text.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy
from sqlalchemy.sql import operators
from sqlalchemy.sql.expression import Grouping

from federation.errors import ExpressionError

__all__ = ["Resolver", "compile_where", "parse_where"]

Resolver = Callable[[str, str | None], sqlalchemy.ColumnElement[Any]]

GRAMMAR = r"""
?start: disj
?disj: conj | disj OR conj -> or_
?conj: neg | conj AND neg -> and_
?neg: atom | NOT neg -> not_
?atom: "(" disj ")"
    | operand COMPARE operand -> compare
    | ident IN "(" items ")" -> in_
    | ident NOT IN "(" items ")" -> not_in
    | operand -> bare
?operand: ident | value
ident: NAME ("." NAME)?
?value: INT -> int | FLOAT -> float | STRING -> string | BIND -> bind
items: item ("," item)*
?item: value | value _DOTDOT value (":" value)? -> range

OR.2: /or\b/i
AND.2: /and\b/i
NOT.2: /not\b/i
IN.2: /in\b/i
NAME: /[A-Za-z_][A-Za-z0-9_]*/
FLOAT.2: /-?(\d+\.\d+([eE][-+]?\d+)?|\d+[eE][-+]?\d+)/
INT: /-?\d+/
STRING: /'(?:[^']|'')*'(?!')|"(?:[^"]|"")*"(?!")/
BIND: /:[A-Za-z_][A-Za-z0-9_]*/
COMPARE: /<=|>=|<>|!=|=|<|>/
_DOTDOT: ".."
%ignore /\s+/
"""

_OPS = {
    "=": operators.eq, "!=": operators.ne, "<>": operators.ne,
    "<": operators.lt, "<=": operators.le, ">": operators.gt, ">=": operators.ge,
}
_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}
_WORDS = {
    "NOT": "NOT", "IN": "IN", "NAME": "an identifier", "INT": "a value", "FLOAT": "a value",
    "STRING": "a value", "BIND": "a value", "LPAR": "'('", "COMMA": "','", "_DOTDOT": "'..'",
    "COLON": "':'", "DOT": "'.'", "AND": "AND", "OR": "OR", "RPAR": "')'",
}
_LISTS = (list, tuple, set, frozenset)
# Limits that keep any expression a user can type within what both databases accept.
MAX_DEPTH = 64  # nesting of AND/OR/NOT
MAX_VALUES = 20_000  # bound values: SQLite allows 32766 parameters per statement
_LEAF = 32  # terms per AND/OR group before it is split in two
INT_MIN, INT_MAX = -(2**63), 2**63 - 1


def _error(message: str, text: str, column: int) -> ExpressionError:
    """Build an ExpressionError carrying the expression and a 1-based column."""
    exc = ExpressionError(message)
    exc.text, exc.column = text, column  # type: ignore[attr-defined]
    return exc


@functools.cache
def _parser() -> Any:
    import lark

    return lark.Lark(GRAMMAR, parser="lalr", lexer="basic", propagate_positions=True)


def _expected(names: set[str]) -> str:
    """Describe a set of expected terminal names in plain words."""
    if "COMPARE" in names:
        return "a comparison operator or IN" if "IN" in names else "a comparison operator"
    if "OR" in names:  # LALR may have reduced past AND; after a predicate both are valid
        names = names | {"AND"}
    if "NAME" in names and "INT" in names:
        return "an expression" if "LPAR" in names else "a value"
    words = list(dict.fromkeys(w for n, w in _WORDS.items() if n in names))
    if not words:
        return "the end of the expression"
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def parse_where(text: str) -> Any:
    """Parse ``text`` into a lark tree; raise ExpressionError on any syntax error."""
    from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedToken

    try:
        return _parser().parse(text)
    except UnexpectedCharacters as exc:
        col, char = exc.pos_in_stream + 1, text[exc.pos_in_stream]
        if char in "'\"":
            raise _error(f"unterminated string starting at column {col}", text, col) from None
        msg = f"cannot parse where expression at column {col} near {char!r}: unexpected character"
        raise _error(msg, text, col) from None
    except UnexpectedToken as exc:
        try:
            names = set(exc.interactive_parser.accepts())
        except Exception:  # pragma: no cover - fall back to the LALR state's set
            names = set(exc.expected)
        expected = _expected(names)
        if exc.token.type == "$END":
            col = len(text.rstrip()) + 1
            msg = f"at column {col}: unexpected end of expression, expected {expected}"
        else:
            col = exc.token.start_pos + 1
            msg = f"at column {col} near {str(exc.token)!r}: expected {expected}"
        raise _error(f"cannot parse where expression {msg}", text, col) from None
    except LarkError as exc:  # pragma: no cover - defensive
        msg = f"cannot parse where expression: {str(exc).splitlines()[0]}"
        raise _error(msg, text, 1) from None


class _Group(Grouping):
    """Parentheses SQLAlchemy keeps: a plain Grouping of an OR inside an OR is flattened.

    Balanced groups keep long AND/OR chains shallow in SQL; SQLite refuses an
    expression tree deeper than 1000 (which a flat chain of 1000 terms is).
    """

    inherit_cache = True
    operator = None  # not delegated to the element, so and_()/or_() do not flatten it


def _balanced(combine: Callable[..., Any], parts: list[Any]) -> Any:
    """``combine(*parts)`` as a tree of groups at most ``_LEAF`` wide (depth ~log n)."""
    if len(parts) <= _LEAF:
        return combine(*parts)
    middle = len(parts) // 2
    return combine(_Group(_balanced(combine, parts[:middle])),
                   _Group(_balanced(combine, parts[middle:])))


class _Compiler:
    """Walk a parse tree and build a SQLAlchemy boolean expression."""

    def __init__(self, text: str, resolve: Resolver, bind: Mapping[str, Any]):
        self.text, self.resolve, self.bind = text, resolve, bind
        self.values = 0  # bound values so far, against MAX_VALUES

    def fail(self, node: Any, what: str) -> ExpressionError:
        span = node.meta if hasattr(node, "meta") else node  # a Tree or a Token
        col, near = span.start_pos + 1, self.text[span.start_pos : span.end_pos]
        return _error(f"invalid where expression at column {col} near {near!r}: {what}",
                      self.text, col)

    def expr(self, tree: Any, depth: int = 0) -> sqlalchemy.ColumnElement[bool]:
        if depth > MAX_DEPTH:
            col = tree.meta.start_pos + 1
            raise _error(f"where expression is nested too deeply at column {col}: more than "
                         f"{MAX_DEPTH} levels of AND, OR and NOT", self.text, col)
        kids = [c for c in tree.children if hasattr(c, "data")]
        kind = tree.data
        if kind in ("or_", "and_"):  # flatten left-recursive chains: no deep recursion
            terms = [kids[1]]
            while kids[0].data == kind:
                kids = [c for c in kids[0].children if hasattr(c, "data")]
                terms.append(kids[1])
            terms.append(kids[0])
            terms.reverse()
            if kind == "or_":
                return _balanced(sqlalchemy.or_, self.alternatives(terms, depth + 1))
            return _balanced(sqlalchemy.and_, [self.expr(k, depth + 1) for k in terms])
        if kind == "not_":
            return sqlalchemy.not_(self.expr(kids[0], depth + 1))
        if kind == "compare":
            return self.compare(tree)
        if kind in ("in_", "not_in"):
            column = self.column(kids[0])
            values, ranges = self.in_items(column, kids[1])
            cond = self.membership(column, values, ranges)
            return sqlalchemy.not_(cond) if kind == "not_in" else cond
        what = "identifier" if kids and kids[0].data == "ident" else "value"
        raise self.fail(tree, f"expected a comparison, not a bare {what}")

    def alternatives(self, terms: list[Any], depth: int) -> list[sqlalchemy.ColumnElement[bool]]:
        """The terms of an OR, with equalities and IN lists on one column merged into one IN.

        ``detector = 1 OR detector = 2 OR ...`` becomes ``detector IN (1, 2, ...)``:
        the same rows (also for NULLs), and one shallow expression however long.
        """
        merged: dict[tuple[str, ...], tuple[Any, list[Any], list[Any]]] = {}
        parts: list[Any] = []
        for term in terms:
            target = self.equality(term)
            if target is None:
                parts.append(self.expr(term, depth))
                continue
            key, column, values, ranges = target
            if key not in merged:
                merged[key] = (column, [], [])
                parts.append(key)  # placeholder: keeps the first occurrence's position
            merged[key][1].extend(values)
            merged[key][2].extend(ranges)
        return [self.membership(*merged[p]) if isinstance(p, tuple) else p for p in parts]

    def equality(self, term: Any) -> tuple[tuple[str, ...], Any, list[Any], list[Any]] | None:
        """(column key, column, values, ranges) of ``ident = value`` or ``ident IN (...)``."""
        if term.data == "in_":
            ident, items = [c for c in term.children if hasattr(c, "data")]
            column = self.column(ident)
            return (self.ident_key(ident), column, *self.in_items(column, items))
        if term.data != "compare" or str(term.children[1]) != "=":
            return None
        left, _, right = term.children
        if left.data != "ident":
            left, right = right, left
        if left.data != "ident" or right.data == "ident":
            return None
        value = self.value(right)
        if isinstance(value, _LISTS):
            raise self.fail(right, "a list bind parameter can only be used in IN (...)")
        column = self.column(left)
        return self.ident_key(left), column, [self.coerce(column, value, right)], []

    @staticmethod
    def ident_key(node: Any) -> tuple[str, ...]:
        return tuple(str(t) for t in node.children)

    def column(self, node: Any) -> sqlalchemy.ColumnElement[Any]:
        names = [str(t) for t in node.children]
        try:
            return self.resolve(names[0], names[1] if len(names) > 1 else None)
        except ExpressionError as exc:
            if getattr(exc, "column", None) is None:
                exc.text, exc.column = self.text, node.meta.start_pos + 1  # type: ignore
            raise

    def value(self, node: Any) -> Any:
        token = node.children[0]
        if node.data == "int":
            value = int(token)
        elif node.data == "float":
            value = float(token)
        elif node.data == "string":
            quote = token[0]
            value = token[1:-1].replace(quote * 2, quote)
        else:
            name = token[1:]
            if name not in self.bind:
                raise self.fail(token, f"no value given for bind parameter {token!s}")
            value = self.bind[name]
        for item in value if isinstance(value, _LISTS) else [value]:
            self.check_integer(item, node)
        self.values += len(value) if isinstance(value, _LISTS) else 1
        if self.values > MAX_VALUES:
            raise self.fail(node, f"more than {MAX_VALUES} values in one where expression; "
                                  "use ranges (a..b) for runs of numbers")
        return value

    def check_integer(self, value: Any, node: Any) -> None:
        """Integers must fit the registry's 64-bit columns (both databases refuse more)."""
        if isinstance(value, int) and not isinstance(value, bool) \
                and not INT_MIN <= value <= INT_MAX:
            raise self.fail(node, f"integer {value} is out of range for a 64-bit integer")

    def compare(self, tree: Any) -> sqlalchemy.ColumnElement[bool]:
        left, op_token, right = tree.children
        op = str(op_token)
        if left.data != "ident" and right.data != "ident":
            raise self.fail(tree, "expected an identifier on one side of the comparison")
        if left.data != "ident":
            left, right, op = right, left, _FLIP.get(op, op)
        column = self.column(left)
        if right.data == "ident":
            return _OPS[op](column, self.column(right))
        value = self.value(right)
        if isinstance(value, _LISTS):
            raise self.fail(right, "a list bind parameter can only be used in IN (...)")
        return _OPS[op](column, self.coerce(column, value, right))

    def coerce(self, column: Any, value: Any, node: Any) -> Any:
        """Convert a literal to the column's type, or fail naming both."""
        try:
            wanted = column.type.python_type
        except NotImplementedError:
            return value
        if wanted is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lstrip("-").isdigit():
                value = int(value)
                self.check_integer(value, node)
                return value
            if isinstance(value, float) and value.is_integer():
                value = int(value)
                self.check_integer(value, node)
                return value
        elif wanted is float:
            if isinstance(value, int | float) and not isinstance(value, bool):
                return value
        elif wanted is str:
            if isinstance(value, str):
                return value
            if isinstance(value, int | float) and not isinstance(value, bool):
                return str(value)
        elif isinstance(value, wanted):
            return value
        name = getattr(column, "key", None) or str(column)
        raise self.fail(node, f"{name} needs a {wanted.__name__} value, not {value!r}")

    def in_items(self, column: Any, items: Any) -> tuple[list[Any], list[Any]]:
        """The coerced values and the range conditions of an IN list."""
        values: list[Any] = []
        ranges: list[sqlalchemy.ColumnElement[bool]] = []
        for item in items.children:
            if item.data == "range":
                ranges.append(self.range(column, item))
                continue
            value = self.value(item)
            values.extend(self.coerce(column, v, item)
                          for v in (value if isinstance(value, _LISTS) else [value]))
        return values, ranges

    @staticmethod
    def membership(column: Any, values: list[Any], ranges: list[Any]
                   ) -> sqlalchemy.ColumnElement[bool]:
        """``column IN (values)`` OR any of the range conditions."""
        parts = list(ranges)
        if values or not parts:
            parts.insert(0, column.in_(values))
        return parts[0] if len(parts) == 1 else _balanced(sqlalchemy.or_, parts)

    def integer(self, node: Any) -> int:
        value = self.value(node)
        if not isinstance(value, numbers.Integral) or isinstance(value, bool):
            raise self.fail(node, "range bounds and stride must be integers")
        return int(value)

    def range(self, column: Any, node: Any) -> sqlalchemy.ColumnElement[bool]:
        low, high = self.integer(node.children[0]), self.integer(node.children[1])
        stride = self.integer(node.children[2]) if len(node.children) > 2 else 1
        if high < low:
            raise self.fail(node, f"range end {high} is below its start {low}")
        if stride <= 0:
            raise self.fail(node.children[2], "range stride must be a positive integer")
        cond = column.between(low, high)
        if stride > 1:
            cond = sqlalchemy.and_(cond, (column - low) % stride == 0)
        return cond


def compile_where(
    text: str | None, resolve: Resolver, bind: Mapping[str, Any] | None = None
) -> sqlalchemy.ColumnElement[bool] | None:
    """Parse ``text`` and return a SQLAlchemy boolean expression, or None when it is empty."""
    if text is None or not text.strip():
        return None
    tree = parse_where(text)
    try:
        return _Compiler(text, resolve, bind or {}).expr(tree)
    except RecursionError:
        raise _error("where expression is nested too deeply", text, 1) from None
