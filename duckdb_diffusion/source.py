"""Turn a user's table argument into a relation, without pasting their text into SQL.

Accepted: a table or view name, qualified and quoted as dbt renders them
(``customers``, ``main.customers``, ``"db"."main"."customers"``), a file path or glob
(``data/sales.parquet``, ``data/*.parquet``), or one parenthesised SELECT
(``(SELECT * FROM c WHERE y > 2020)``). Plain names are re-quoted here, other names are
parsed and re-quoted by sqlglot; a subquery must parse as a single read-only query.

Why plain names and quoting skip sqlglot: its first use of the DuckDB dialect in a process
costs ~20 ms (the dialect's set-up), a fifth of the planning of a first query.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import duckdb
import sqlglot
from sqlglot import exp

# An unquoted table name, qualified by schema and catalog or not.
PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*){0,2}")


class SourceError(ValueError):
    pass


@dataclass(frozen=True)
class Source:
    text: str  # what the user wrote
    sql: str  # a SELECT over it, rebuilt by sqlglot
    default_model: str | None  # the table's own name; None for a subquery

    def relation(self, con: duckdb.DuckDBPyConnection, run=None) -> duckdb.DuckDBPyRelation:
        """``SELECT * FROM`` the source on ``con`` (through ``run(con, sql)`` if given)."""
        try:
            return run(con, self.sql) if run is not None else con.sql(self.sql)
        except duckdb.CatalogException as error:
            raise SourceError(
                f"table {self.text!r} was not found ({_first_line(error)}); "
                'check the name, or quote it like "schema"."table"'
            ) from None


def parse_source(text: str) -> Source:
    if not isinstance(text, str) or not text.strip():
        raise SourceError("the table argument is empty: give a table name or a (SELECT ...)")
    stripped = text.strip()
    if stripped.startswith("("):
        return Source(text, _subquery(stripped), None)
    if _is_path(stripped):
        return Source(text, f"SELECT * FROM {sql_literal(stripped)}", _path_name(stripped))
    if PLAIN_NAME.fullmatch(stripped):
        parts = stripped.split(".")
        return Source(text, "SELECT * FROM " + ".".join(map(sql_identifier, parts)), parts[-1])
    try:
        table = exp.to_table(stripped, dialect="duckdb")
    except (sqlglot.errors.ParseError, sqlglot.errors.TokenError, ValueError) as error:
        raise SourceError(
            f"table name {text!r} does not parse ({error}); write a name as in SQL, with "
            f"double quotes around odd names ('\"my table\"', 'sales.\"2024\"'), or a "
            f"parenthesised SELECT"
        ) from None
    if not isinstance(table, exp.Table) or not table.name:
        raise SourceError(f"table name {text!r} is not a table name")
    if len(table.parts) > 3:  # sqlglot would drop the middle parts: another table
        raise SourceError(
            f"table name {text!r} has {len(table.parts)} parts; a table is named by at most "
            f"three (catalog.schema.table)"
        )
    parts = [p for p in (table.catalog, table.db, table.name) if p]
    quoted = exp.Table(
        this=exp.to_identifier(parts[-1], quoted=True),
        db=exp.to_identifier(parts[-2], quoted=True) if len(parts) > 1 else None,
        catalog=exp.to_identifier(parts[-3], quoted=True) if len(parts) > 2 else None,
    )
    sql = exp.select("*").from_(quoted).sql(dialect="duckdb")
    return Source(text, sql, table.name)


FILE_SUFFIX = re.compile(r"\.(parquet|csv|tsv|json|jsonl|ndjson)(\.gz|\.zst)?$", re.IGNORECASE)


def _is_path(text: str) -> bool:
    """A file path or glob (``data/*.parquet``), read as ``SELECT * FROM 'path'`` reads it."""
    return not text.startswith('"') and (bool(FILE_SUFFIX.search(text)) or "*" in text)


def _path_name(text: str) -> str:
    """The default model name of a path: the file's name without its suffixes, or for a glob
    the folder holding the files (``sales/2024/*.parquet`` -> ``2024``)."""
    parts = [p for p in re.split(r"[\\/]", text) if p]
    name = FILE_SUFFIX.sub("", parts[-1]) if parts else text
    if "*" in name or not name:
        folders = [p for p in parts[:-1] if "*" not in p]
        name = folders[-1] if folders else "files"
    return name


def sql_identifier(name: str) -> str:
    """A column or table name as a quoted DuckDB identifier (a double quote doubled)."""
    return '"' + name.replace('"', '""') + '"'


def sql_literal(value) -> str:
    """A Python string, number or None as a DuckDB literal (strings escaped, never pasted:
    a single quote doubled; DuckDB reads no backslash escapes in them)."""
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return str(value)


def _subquery(text: str) -> str:
    try:
        statements = sqlglot.parse(text, dialect="duckdb")
    except (sqlglot.errors.ParseError, sqlglot.errors.TokenError) as error:
        raise SourceError(
            f"subquery {text!r} is not one (SELECT ...) that parses: {_first_line(error)}"
        ) from None
    if len(statements) != 1 or statements[0] is None:
        raise SourceError(f"subquery {text!r} must be exactly one (SELECT ...)")
    node = statements[0]
    while isinstance(node, exp.Paren | exp.Subquery):
        node = node.this
    if not isinstance(node, exp.Query):
        raise SourceError(f"subquery {text!r} must be a SELECT, not {node.key.upper()}")
    return node.sql(dialect="duckdb")


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0]
