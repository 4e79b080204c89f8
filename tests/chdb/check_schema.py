#!/usr/bin/env python3
"""Egress schema on current ClickHouse, in process through chdb (pip package `chdb-core`).

Reads the DDL for current servers written by the Rust test `dump_ddl_for_both_generations`
(query/tests/schema_docs.rs), creates it in a fresh chdb session, inserts a few rows with SQL,
checks the columns against docs/schema.md, exercises the TTL change and the retention query of
query/src/retention.rs, and runs every example query of docs/schema.md. Exits non-zero on the
first failure.

Usage: check_schema.py <ddl dir> <docs/schema.md>
  <ddl dir> holds current.sql and retention.sql (database `egress`, 30 days), as dumped.
"""

import re
import sys
import tempfile
import time

import chdb
from chdb import session

def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def statements(ddl_text):
    """The `;`-terminated statements of the dump, comments dropped."""
    body = "\n".join(line for line in ddl_text.splitlines() if not line.startswith("--"))
    # Comments contain no `;` (checked by query/src/migrate.rs tests), so splitting is safe.
    return [s.strip() for s in body.split(";\n") if s.strip()]


def documented_columns(markdown):
    """{table: [(column, current type, meaning)]} from the `### Table` sections."""
    tables, current = {}, None
    for line in markdown.splitlines():
        if line.startswith("### Table "):
            current = line[len("### Table "):].strip().strip("`")
            tables[current] = []
        elif line.startswith("#"):
            current = None
        elif current and line.startswith("| `"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            tables[current].append((cells[0].strip("`"), cells[1].strip("`"), cells[4]))
    return tables


def example_queries(markdown):
    section = markdown.split("## Example queries", 1)[1]
    return [block.split("```", 1)[0].strip() for block in section.split("```sql")[1:]]


def main():
    if len(sys.argv) != 3:
        fail(__doc__)
    ddl_text = open(f"{sys.argv[1]}/current.sql").read()
    retention_query = open(f"{sys.argv[1]}/retention.sql").read().strip()
    markdown = open(sys.argv[2]).read()
    print(f"chdb {chdb.__version__}")

    with tempfile.TemporaryDirectory() as path:
        s = session.Session(path)
        q = lambda sql, fmt="TSV": str(s.query(sql, fmt))
        version = q("SELECT version()").strip()
        print(f"ClickHouse engine {version}")

        created = 0
        for statement in statements(ddl_text):
            # As `migrate` does: an added column the table already has (a fresh database gets
            # it from the CREATE) is skipped, since 18.16 has no ADD COLUMN IF NOT EXISTS.
            added = re.match(r"ALTER TABLE (\w+)\.(\w+) ADD COLUMN (\w+) ", statement)
            if added and q(
                f"SELECT count() FROM system.columns WHERE database = '{added[1]}' "
                f"AND table = '{added[2]}' AND name = '{added[3]}'"
            ).strip() != "0":
                continue
            q(statement)
            created += 1
        print(f"applied {created} DDL statements")

        # Columns: order, types and comments as documented.
        for table, documented in documented_columns(markdown).items():
            rows = q(
                f"SELECT name, type, comment FROM system.columns "
                f"WHERE database = 'egress' AND table = '{table}' ORDER BY position"
            ).rstrip("\n").split("\n")
            actual = [tuple(r.split("\t")) for r in rows]
            expected = [(n, t, m) for n, t, m in documented]
            # TSV escapes `'` in types as `\'`.
            actual = [(n, t.replace("\\'", "'"), c.replace("\\'", "'")) for n, t, c in actual]
            if actual != expected:
                for a, e in zip(actual, expected):
                    if a != e:
                        fail(f"{table}: column {a} differs from docs {e}")
                fail(f"{table}: {len(actual)} columns, docs have {len(expected)}")
            print(f"{table}: {len(actual)} columns match docs/schema.md")

        ttl = q("SELECT engine_full FROM system.tables WHERE database = 'egress' AND name = 'flows'")
        if "TTL time_received + toIntervalDay(30)" not in ttl:
            fail(f"flows has no 30-day TTL: {ttl}")

        now = int(time.time())
        old = now - 40 * 86400
        q(
            "INSERT INTO egress.flows (time_received, time_flow_start, time_flow_end, exporter_address, "
            "observation_domain, flow_type, sampling_rate, sampling_source, src_addr, dst_addr, src_port, "
            "dst_port, proto, bytes, packets, in_if, out_if, next_hop, etype, direction, traffic_direction, "
            "egress_path, out_if_role, out_if_kind, src_internal) VALUES "
            f"({now}, {now - 30}, {now}, '::ffff:192.0.2.1', 7, 'ipfix', 1000, 'options', '::ffff:10.0.0.1', "
            f"'2001:db8::53', 51000, 443, 6, 1500, 3, 3, 12, '::ffff:10.0.0.254', 34525, 'egress', 'outbound', "
            "'edge1 / et-0/0/12 (Transit A)', 'external', 'transit', 1), "
            f"({now - 60}, {now - 90}, {now - 60}, '::ffff:192.0.2.1', 7, 'ipfix', 1000, 'options', "
            f"'::ffff:10.0.0.2', '::ffff:198.51.100.7', 40000, 53, 17, 120, 1, 3, 12, '::', 2048, 'egress', "
            "'outbound', 'edge1 / et-0/0/12 (Transit A)', 'external', 'transit', 1)"
        )
        minute = now - now % 60 - 600
        q(
            "INSERT INTO egress.exporter_stats VALUES "
            f"({minute}, '::ffff:192.0.2.1', 7, 'ipfix', 60, 1800, 12, ['missing_template', 'truncated'], "
            "[3, 1], 4)"
        )
        counters = "1, 77, 12, 6, 10000000000, 1, 3, {inb}, 1000, 10, 5, 1, 2, 3, {outb}, 2000, 20, 6, 4, 5, 0"
        q(
            "INSERT INTO egress.interface_counters VALUES "
            f"({now - 30}, '::ffff:192.0.2.9', '2001:db8::9', " + counters.format(inb=10**12, outb=2 * 10**12) + "), "
            f"({now}, '::ffff:192.0.2.9', '2001:db8::9', " + counters.format(inb=10**12 + 10**6, outb=2 * 10**12) + ")"
        )
        shown = q(
            "SELECT IPv6NumToString(exporter_address), flow_type, direction, traffic_direction, out_if_kind "
            "FROM egress.flows LIMIT 1"
        ).strip()
        if shown != "::ffff:192.0.2.1\tipfix\tegress\toutbound\ttransit":
            fail(f"unexpected flow row: {shown!r}")

        # The retention query of query/src/retention.rs: an old partition is listed, today's is not.
        # (Written with the TTL removed first, so that the old row survives the insert.)
        q("ALTER TABLE egress.exporter_stats REMOVE TTL")
        q(
            "INSERT INTO egress.exporter_stats VALUES "
            f"({old - old % 60}, '::ffff:192.0.2.1', 7, 'ipfix', 1, 1, 0, [], [], 0)"
        )
        expired = q(retention_query).strip().split("\n")
        old_day = time.strftime("%Y%m%d", time.gmtime(old))
        if expired != [f"exporter_stats\t{old_day}"]:
            fail(f"retention query listed {expired}, expected exporter_stats/{old_day}")
        q(f"ALTER TABLE egress.exporter_stats DROP PARTITION ID '{old_day}'")
        q("ALTER TABLE egress.exporter_stats MODIFY TTL minute + INTERVAL 30 DAY")
        print("retention query and TTL change work")

        queries = example_queries(markdown)
        if len(queries) < 5:
            fail(f"only {len(queries)} example queries in docs/schema.md")
        for number, query in enumerate(queries, 1):
            try:
                result = q(query)
            except Exception as error:  # chdb raises its own ChdbError
                fail(f"example query {number} failed: {error}\n{query}")
            if not result.strip():
                fail(f"example query {number} returned no rows:\n{query}")
        print(f"all {len(queries)} example queries ran and returned rows")
        s.close()
    print("OK")


if __name__ == "__main__":
    main()
