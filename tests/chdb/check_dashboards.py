#!/usr/bin/env python3
"""Egress Grafana dashboard queries on current ClickHouse, in process through chdb (`chdb-core`).

Reads the current-server DDL (`current.sql`, dumped by query/tests/schema_docs.rs), the test rows
(`dashboards-data.sql`) and every dashboard query expanded as Grafana and the ClickHouse plugin
expand it (`dashboards.sql`), both dumped by query/tests/dashboards.rs::dump_dashboard_sql.
Creates the schema in a fresh chdb session, loads the rows, and runs every query: a variable
query must list exactly the expected options, a panel query must return at least one row with a
value that is not zero or empty. Exits non-zero if any query fails.

Usage: check_dashboards.py <ddl dir> [--show]   (--show prints every answer)
Run:   EGRESS_DDL_DIR=<dir> cargo test -p egress-query --test schema_docs dump_ddl_for_both_generations
       EGRESS_DDL_DIR=<dir> cargo test -p egress-query --test dashboards dump_dashboard_sql
       <venv>/bin/python tests/chdb/check_dashboards.py <dir>
"""

import json
import sys
import tempfile

import chdb
from chdb import session


def statements(text):
    body = "\n".join(line for line in text.splitlines() if not line.startswith("--"))
    return [s.strip() for s in body.split(";\n") if s.strip()]


def planned_queries(text):
    """(label, expectation, sql) of every block of dashboards.sql."""
    queries = []
    for block in text.split(";\n"):
        lines = block.strip().splitlines()
        label = next((l[len("-- query: "):] for l in lines if l.startswith("-- query: ")), None)
        expect = next((l[len("-- expect: "):] for l in lines if l.startswith("-- expect: ")), None)
        sql = "\n".join(l for l in lines if not l.startswith("--")).strip()
        if label is None or not sql:
            continue
        queries.append((label, expect, sql))
    return queries


def empty_cell(cell):
    if cell in ("", "\\N", "[]") or cell.startswith(("1970-01-01", "0000-00-00")):
        return True
    try:
        value = float(cell)
    except ValueError:
        return False
    return value == 0 or value != value


def check(expect, answer):
    """None when the answer is what the query must give, else why not."""
    rows = [row for row in answer.splitlines() if row]
    if expect == "rows":
        if not any(not empty_cell(cell) for row in rows for cell in row.split("\t")):
            return f"no row with a value: {answer!r}"
        return None
    if expect.startswith("options "):
        expected = json.loads(expect[len("options "):])
        options = sorted(row.split("\t")[0] for row in rows)
        if options != expected:
            return f"options {options}, expected {expected}"
        return None
    return f"unknown expectation {expect!r}"


def main():
    args = [a for a in sys.argv[1:] if a != "--show"]
    show = "--show" in sys.argv[1:]
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    directory = args[0]
    ddl = open(f"{directory}/current.sql").read()
    data = open(f"{directory}/dashboards-data.sql").read()
    queries = planned_queries(open(f"{directory}/dashboards.sql").read())
    print(f"chdb {chdb.__version__}")
    failures = []
    total_rows = 0
    with tempfile.TemporaryDirectory() as path:
        s = session.Session(path)
        q = lambda sql: str(s.query(sql, "TSV"))
        print(f"ClickHouse engine {q('SELECT version()').strip()}")
        for statement in statements(ddl):
            try:
                q(statement)
            except Exception as error:
                # Migration 005 adds the classification columns to tables created before it;
                # a fresh table already has them.
                if "DUPLICATE_COLUMN" not in str(error):
                    raise
        for statement in statements(data):
            q(statement)
        hours = int(q("SELECT count() FROM egress.flows_1h_path FINAL").strip())
        if hours < 9:
            failures.append(f"only {hours} closed hours in flows_1h_path")
        for label, expect, sql in queries:
            try:
                answer = q(sql)
            except Exception as error:  # chdb raises its own error types
                failures.append(f"{label}: {error}\n{sql}")
                continue
            if show:
                print(f"== {label}\n{answer}")
            problem = check(expect, answer)
            if problem:
                failures.append(f"{label}: {problem}\n{sql}")
                continue
            total_rows += len([row for row in answer.splitlines() if row])
    for failure in failures:
        print(f"FAIL: {failure}\n", file=sys.stderr)
    panels = sum(1 for _, expect, _ in queries if expect == "rows")
    print(
        f"{len(queries)} dashboard queries ({panels} panel, {len(queries) - panels} variable) "
        f"on current ClickHouse: {len(queries) - len(failures)} ok, {len(failures)} failed, "
        f"{total_rows} rows"
    )
    if failures or not queries:
        sys.exit(1)


if __name__ == "__main__":
    main()
