#!/bin/sh
# Checks the Egress schema on current ClickHouse (through chdb, in process): dumps the DDL with
# the Rust test, installs chdb-core into a virtualenv under the target directory if missing,
# and runs check_schema.py. Usage: tests/chdb/run.sh  (from anywhere; honours CARGO_TARGET_DIR)
set -eu
repo=$(cd "$(dirname "$0")/../.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
venv=$target/chdb-venv
ddl_dir=$target/egress-ddl
python=${PYTHON:-python3}

EGRESS_DDL_DIR=$ddl_dir cargo test --quiet --manifest-path "$repo/Cargo.toml" -p egress-query \
    --test schema_docs dump_ddl_for_both_generations >/dev/null

if ! "$venv/bin/python" -c 'import chdb' 2>/dev/null; then
    "$python" -m venv "$venv"
    "$venv/bin/pip" install --quiet chdb-core
fi
"$venv/bin/python" "$repo/tests/chdb/check_schema.py" "$ddl_dir" "$repo/docs/schema.md"
EGRESS_DDL_DIR=$ddl_dir cargo test --quiet --manifest-path "$repo/Cargo.toml" -p egress-query --test rollups dump_rollup_ddl >/dev/null && "$venv/bin/python" "$repo/tests/chdb/check_rollups.py" "$ddl_dir" "$repo/docs/schema.md"
EGRESS_DDL_DIR=$ddl_dir cargo test --quiet --manifest-path "$repo/Cargo.toml" -p egress-query \
    --test sla_18 dump_sla_sql >/dev/null
EGRESS_DDL_DIR=$ddl_dir cargo test --quiet --manifest-path "$repo/Cargo.toml" -p egress-query \
    --test status_page dump_status_sql >/dev/null
"$venv/bin/python" "$repo/tests/chdb/check_sla_sql.py" "$ddl_dir"
EGRESS_DDL_DIR=$ddl_dir cargo test --quiet --manifest-path "$repo/Cargo.toml" -p egress-query \
    --test dashboards dump_dashboard_sql >/dev/null
"$venv/bin/python" "$repo/tests/chdb/check_dashboards.py" "$ddl_dir"
