#!/usr/bin/env python3
"""Egress SLA queries on current ClickHouse, in process through chdb (pip package `chdb-core`).

Reads the current-server DDL (`current.sql`, dumped by query/tests/schema_docs.rs; and
`rollups-current.sql`, dumped by query/tests/rollups.rs `dump_rollup_ddl`) and the SLA queries with literal values (`sla.sql`, dumped by query/tests/sla_18.rs::dump_sla_sql), creates
the schema in a fresh chdb session, inserts a few rows and runs every SLA query, then every
query of the status page (`status.sql`, dumped by query/tests/status_page.rs::dump_status_sql).
Exits non-zero on the first failure.

Usage: check_sla_sql.py <ddl dir>
Run:   EGRESS_DDL_DIR=<dir> cargo test -p egress-query --test schema_docs dump_ddl_for_both_generations
       EGRESS_DDL_DIR=<dir> cargo test -p egress-query --test rollups dump_rollup_ddl
       EGRESS_DDL_DIR=<dir> cargo test -p egress-query --test sla_18 dump_sla_sql
       EGRESS_DDL_DIR=<dir> cargo test -p egress-query --test status_page dump_status_sql
       <venv>/bin/python tests/chdb/check_sla_sql.py <dir>
"""

import sys
import tempfile

import chdb
from chdb import session


def statements(text):
    body = "\n".join(line for line in text.splitlines() if not line.startswith("--"))
    return [s.strip() for s in body.split(";\n") if s.strip()]


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    ddl = open(f"{sys.argv[1]}/current.sql").read()
    # The rollups' views fill the per-minute path table from the rows inserted below.
    ddl += "\n" + open(f"{sys.argv[1]}/rollups-current.sql").read()
    sla_text = open(f"{sys.argv[1]}/sla.sql").read()
    queries = statements(sla_text)
    # The status page's queries (generated within seconds of the SLA ones, so the rows inserted
    # below fall in their windows too).
    status_queries = statements(open(f"{sys.argv[1]}/status.sql").read())
    queries += status_queries
    # The evaluation time the queries were generated for (rows are inserted relative to it).
    now = int(sla_text.split("-- now: ", 1)[1].split("\n", 1)[0])
    print(f"chdb {chdb.__version__}")
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
        q(
            "INSERT INTO egress.flows (time_received, exporter_address, sampling_rate, src_addr, "
            "dst_addr, bytes, out_if, dst_as, traffic_direction, src_internal, dst_cloud) VALUES "
            f"({now - 100}, '::ffff:192.0.2.1', 1000, '::ffff:10.0.0.5', '::ffff:203.0.113.7', "
            "1000, 1, 64501, 'outbound', 1, ''), "
            f"({now - 604800 * 2 - 1800}, '::ffff:192.0.2.1', 1000, '::ffff:10.0.0.5', "
            "'::ffff:198.51.100.7', 1000, 1, 64999, 'outbound', 1, 'aws/S3/eu-west-1')"
        )
        # Round trips for the latency queries: an outbound flow with nProbe RTT halves on
        # `transit-a` and a probe through it.
        q(
            "INSERT INTO egress.flows (time_received, exporter_address, traffic_direction, "
            "egress_path, rtt_client_us, rtt_server_us, rtt_source) VALUES "
            f"({now - 150}, '::ffff:192.0.2.1', 'outbound', 'transit-a', 1000, 4000, 'nprobe')"
        )
        q(
            "INSERT INTO egress.probes (time, path, target, method, rtt_us, success, error) "
            f"VALUES ({now - 150}, 'transit-a', '192.0.2.9:443', 'tcp', 20000, 1, '')"
        )
        q(
            "INSERT INTO egress.exporter_stats (minute, exporter_address, datagrams, records, "
            f"records_lost) VALUES ({now - 90}, '::ffff:192.0.2.1', 10, 100, 1)"
        )
        # Two results of one SLA and subject, for the status page's latest-result query.
        q(
            "INSERT INTO egress.sla_results (time, sla, kind, subject, value, threshold, verdict) "
            f"VALUES ({now - 120}, 'transit', 'throughput', 'transit-a', 0.5, 0.8, 'ok'), "
            f"({now - 60}, 'transit', 'throughput', 'transit-a', 0.9, 0.8, 'breach')"
        )
        print("flows:", q("SELECT count(), min(toUInt32(time_received)) FROM egress.flows").strip())
        total_rows = 0
        for query in queries:
            try:
                rows = q(query)
            except Exception as error:  # chdb raises its own error types
                print(f"FAIL: {error}\n{query}", file=sys.stderr)
                sys.exit(1)
            if "latency_1m" in query and not rows.strip():
                print(f"FAIL: the latency rollup holds no row of the inserted flow and probe\n{query}", file=sys.stderr)
                sys.exit(1)
            print(f"ok ({len(rows.splitlines())} rows): {query.splitlines()[0][:100]}")
            total_rows += len(rows.splitlines())
        if total_rows == 0:
            fail_text = "every SLA query returned nothing on the inserted rows"
            print(f"FAIL: {fail_text}", file=sys.stderr)
            sys.exit(1)
        print(
            f"{len(queries) - len(status_queries)} SLA and {len(status_queries)} status page "
            f"queries ran on current ClickHouse, {total_rows} rows"
        )


if __name__ == "__main__":
    main()
