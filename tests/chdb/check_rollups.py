#!/usr/bin/env python3
"""Egress rollups on current ClickHouse, in process through chdb (pip package `chdb-core`).

Applies the schema DDL (current.sql, dumped by query/tests/schema_docs.rs) and the rollup DDL
(rollups-current.sql, dumped by query/tests/rollups.rs `dump_rollup_ddl`) in a fresh chdb
session, inserts egress flows in several inserts per minute with different sampling rates, and
checks against sums computed here, independently of ClickHouse:
- minute rollups: scaled bytes, scaled packets and records per dimension, before and after merges;
- the hour-closing statements (rollups-close.sql): sums, records, minutes and the peak one-minute
  rate; recomputing after late rows replaces the earlier hour row;
- the path rate query of query/src/rollups.rs equals the same query on raw flows;
- every example query of the Rollups section of docs/schema.md runs and returns rows;
- a batch inserted twice (the collector's retry after a broken connection) is stored once, in
  flows and in the rollups.
Exits non-zero on the first failure.

Usage: check_rollups.py <ddl dir> <docs/schema.md>
"""

import random
import sys
import tempfile
import time
from collections import defaultdict

import chdb
from chdb import session

# The classification columns the rollup views read. The schema adds them (flows' create
# migration); added here only when a dump predates them.
CLASSIFICATION_COLUMNS = [
    ("traffic_direction", "Enum8('unknown' = 0, 'outbound' = 1, 'inbound' = 2, 'internal' = 3, 'transit' = 4)"),
    ("egress_path", "LowCardinality(String)"),
    ("src_internal", "UInt8"),
    ("dst_internal", "UInt8"),
]

PATHS = [
    ("::ffff:192.0.2.1", 1, "edge1 / et-0/0/1 (Transit A)"),
    ("::ffff:192.0.2.1", 2, "edge1 / et-0/0/2 (Peering B)"),
    ("::ffff:192.0.2.2", 7, "edge2 / xe-1/0/0 (Transit C)"),
]

# key expression (SQL) and key function (Python) per rollup, as in query/tests/rollups.rs.
ROLLUPS = {
    "path": ("concat(egress_path, '|', IPv6NumToString(exporter_address), '|', toString(out_if))",
             lambda f: f"{f['path']}|{f['exporter']}|{f['out_if']}"),
    "src_host": ("IPv6NumToString(src_addr)", lambda f: f["src"]),
    "dst_as": ("toString(dst_as)", lambda f: str(f["dst_as"])),
}


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def statements(ddl_text):
    body = "\n".join(line for line in ddl_text.splitlines() if not line.startswith("--"))
    return [s.strip() for s in body.split(";\n") if s.strip()]


def flows_batch(rng, hour, minutes, sampling_rate):
    flows = []
    for minute in minutes:
        for index, (exporter, out_if, path) in enumerate(PATHS):
            for _ in range(1 + rng.randrange(3)):
                burst = 50 if minute == 17 and index == 0 else 1
                flows.append({
                    "time": hour + minute * 60 + rng.randrange(60), "exporter": exporter,
                    "sampling_rate": sampling_rate, "src": f"::ffff:10.0.0.{1 + rng.randrange(5)}",
                    "dst": f"::ffff:198.51.100.{rng.randrange(250)}",
                    "bytes": (40 + rng.randrange(1460)) * burst, "packets": 1 + rng.randrange(10),
                    "out_if": out_if, "dst_as": 64500 + rng.randrange(4), "direction": "outbound",
                    "path": path,
                })
        for direction in ("inbound", "internal"):
            flows.append(dict(flows[-1], bytes=1_000_000, direction=direction, path=""))
    return flows


def insert(q, flows):
    values = ", ".join(
        f"({f['time']}, '{f['exporter']}', {f['sampling_rate']}, '{f['src']}', '{f['dst']}', "
        f"{f['bytes']}, {f['packets']}, {f['out_if']}, {f['dst_as']}, '{f['direction']}', "
        f"'{f['path']}', 1, 0)"
        for f in flows
    )
    q("INSERT INTO egress.flows (time_received, exporter_address, sampling_rate, src_addr, dst_addr, "
      "bytes, packets, out_if, dst_as, traffic_direction, egress_path, src_internal, dst_internal) "
      # As the collector sends flows to servers with insert deduplication (query/src/migrate.rs).
      "SETTINGS deduplicate_blocks_in_dependent_materialized_views = 1 "
      f"VALUES {values}")


def expected_minutes(flows, key):
    sums = defaultdict(lambda: [0, 0, 0])
    for f in flows:
        if f["direction"] != "outbound":
            continue
        row = sums[(f["time"] - f["time"] % 60, key(f))]
        row[0] += f["bytes"] * f["sampling_rate"]
        row[1] += f["packets"] * f["sampling_rate"]
        row[2] += 1
    return {k: tuple(v) for k, v in sums.items()}


def expected_hours(flows, key, closed_hour):
    hours = {}
    for (minute, k), (b, p, r) in expected_minutes(flows, key).items():
        if minute - minute % 3600 != closed_hour:
            continue
        row = hours.setdefault(k, [0, 0, 0, 0, 0.0, 0.0])
        row[0] += b
        row[1] += p
        row[2] += r
        row[3] += 1
        row[4] = max(row[4], b / 60)
        row[5] = max(row[5], p / 60)
    return hours


def rows(q, sql):
    text = q(sql).strip()
    return [line.split("\t") for line in text.split("\n")] if text else []


def check_hours(q, flows, closed_hour, label):
    for name, (key_sql, key) in ROLLUPS.items():
        expected = expected_hours(flows, key, closed_hour)
        actual = {
            r[0]: [int(r[1]), int(r[2]), int(r[3]), int(r[4]), float(r[5]), float(r[6])]
            for r in rows(q, f"SELECT {key_sql}, scaled_bytes, scaled_packets, records, minutes, "
                             f"peak_bytes_per_second, peak_packets_per_second "
                             f"FROM egress.flows_1h_{name} FINAL")
        }
        for k in set(expected) | set(actual):
            e, a = expected.get(k), actual.get(k)
            if e is None or a is None or e[:4] != a[:4] or any(abs(x - y) > 1e-6 * max(1, x)
                                                              for x, y in zip(e[4:], a[4:])):
                fail(f"{label}: flows_1h_{name} {k}: {a}, expected {e}")
        print(f"flows_1h_{name}: {len(expected)} hour rows {label}")


def main():
    if len(sys.argv) != 3:
        fail(__doc__)
    ddl_dir, docs = sys.argv[1], sys.argv[2]
    schema_ddl = open(f"{ddl_dir}/current.sql").read()
    rollup_ddl = open(f"{ddl_dir}/rollups-current.sql").read()
    close_statements = [l for l in open(f"{ddl_dir}/rollups-close.sql").read().splitlines() if l]
    rates_query = open(f"{ddl_dir}/rollups-rates.sql").read().strip()
    markdown = open(docs).read()
    print(f"chdb {chdb.__version__}")

    with tempfile.TemporaryDirectory() as path:
        s = session.Session(path)
        q = lambda sql, fmt="TSV": str(s.query(sql, fmt))
        print(f"ClickHouse engine {q('SELECT version()').strip()}")
        for statement in statements(schema_ddl):
            try:
                q(statement)
            except Exception as error:
                # migrate() skips an ADD COLUMN whose column exists (fresh tables have them all).
                if "ADD COLUMN" not in statement or "DUPLICATE_COLUMN" not in str(error):
                    raise
        present = q("SELECT name FROM system.columns WHERE database = 'egress' AND table = 'flows'").split()
        for name, data_type in CLASSIFICATION_COLUMNS:
            if name not in present:
                q(f"ALTER TABLE egress.flows ADD COLUMN {name} {data_type}")
        applied = 0
        for statement in statements(rollup_ddl):
            q(statement)
            applied += 1
        print(f"applied {applied} rollup DDL statements")

        now = int(time.time())
        current_hour = now - now % 3600
        closed_hour = current_hour - 2 * 3600
        rng = random.Random(7)
        flows = []
        for sampling_rate in (1, 100, 1000, 2048):
            batch = flows_batch(rng, closed_hour, range(60), sampling_rate)
            insert(q, batch)
            flows += batch
        batch = flows_batch(rng, current_hour, range(2), 512)
        insert(q, batch)
        flows += batch

        for name, (key_sql, key) in ROLLUPS.items():
            expected = expected_minutes(flows, key)
            for stage in ("before merges", "after merges"):
                actual = {
                    (int(r[0]), r[1]): (int(r[2]), int(r[3]), int(r[4]))
                    for r in rows(q, f"SELECT toUInt32(minute), {key_sql} AS key, sum(scaled_bytes), "
                                     f"sum(scaled_packets), sum(records) FROM egress.flows_1m_{name} "
                                     f"GROUP BY minute, key")
                }
                if actual != expected:
                    diff = sorted(set(actual.items()) ^ set(expected.items()))[:3]
                    fail(f"flows_1m_{name} {stage} differs from the raw flows: {diff}")
                q(f"OPTIMIZE TABLE egress.flows_1m_{name} FINAL")
            print(f"flows_1m_{name}: {len(expected)} minute keys match the scaled raw flows")

        def close(closed_at, hour):
            for statement in close_statements:
                for value in (closed_at, hour, hour + 3600):
                    statement = statement.replace("?", str(value), 1)
                q(statement)

        close(now, closed_hour)
        check_hours(q, flows, closed_hour, "after closing")
        late = flows_batch(rng, closed_hour, range(5, 6), 4096)
        insert(q, late)
        flows += late
        # The collector's retry of an insert the server stored before the connection broke:
        # the same block again, which the flows table's deduplication window ignores, in flows
        # and in the rollup views alike (the hour check below would see doubled late rows).
        insert(q, late)
        stored = int(q("SELECT count() FROM egress.flows").strip())
        if stored != len(flows):
            fail(f"a repeated insert was stored again: {stored} flows, {len(flows)} inserted")
        print(f"a repeated insert of {len(late)} flows was deduplicated")
        close(now + 60, closed_hour)
        check_hours(q, flows, closed_hour, "after late rows")
        for name in ROLLUPS:
            q(f"OPTIMIZE TABLE egress.flows_1h_{name} FINAL")
        check_hours(q, flows, closed_hour, "after merges")

        # The last hour up to a minute past now, but never ending inside the current hour's
        # two generated minutes: in the first minute of an hour, now + 60 would cut minute 1,
        # which the rollup holds whole and the raw flows' range only in part.
        last_hour_end = max(now + 60, current_hour + 120)
        for start, end in ((closed_hour, closed_hour + 3600), (now - 3600, last_hour_end)):
            on_rollup = q(rates_query.replace("?", str(start), 1).replace("?", str(end), 1))
            on_flows = q(
                "SELECT toStartOfMinute(time_received) AS minute, egress_path, "
                "sum(bytes * sampling_rate) * 8 / 60 AS bits_per_second, count() AS records "
                "FROM egress.flows WHERE traffic_direction = 'outbound' "
                f"AND time_received >= toDateTime({start}) AND time_received < toDateTime({end}) "
                "GROUP BY minute, egress_path ORDER BY minute, egress_path")
            if not on_flows.strip() or on_rollup != on_flows:
                fail(f"path rates over [{start}, {end}) differ:\n{on_rollup[:500]}\nvs\n{on_flows[:500]}")
        print("path rates per minute on the rollup equal those on raw flows")

        section = markdown.split("\n## Rollups\n", 1)[1].split("\n## ", 1)[0]
        queries = [b.split("```", 1)[0].strip() for b in section.split("```sql")[1:]]
        if len(queries) < 4:
            fail(f"only {len(queries)} example queries in the Rollups section")
        for number, query in enumerate(queries, 1):
            try:
                result = q(query)
            except Exception as error:  # chdb raises its own ChdbError
                fail(f"rollup example query {number} failed: {error}\n{query}")
            if not result.strip():
                fail(f"rollup example query {number} returned no rows:\n{query}")
        print(f"all {len(queries)} rollup example queries ran and returned rows")
        s.close()
    print("OK")


if __name__ == "__main__":
    main()
