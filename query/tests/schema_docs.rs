//! `docs/schema.md` against the DDL: every column of every table, on both server generations,
//! is documented with its types, codec and meaning (the meaning is the column's `COMMENT`), and
//! the documentation names no column the DDL lacks. Also writes the DDL for both generations to
//! files, for `tests/chdb/check_schema.py` and for reading.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use egress_query::connection::{ClickHouseConfig, ServerVersion};
use egress_query::migrate::{ddl, tables};

const OLD: ServerVersion = ServerVersion::new(18, 16, 1);
const CURRENT: ServerVersion = ServerVersion::new(26, 1, 0);

fn schema_md() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/schema.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One documented column: (type on current servers, type on 18.x, codec, meaning).
type DocumentedColumn = (String, String, String, String);

/// The column tables of `docs/schema.md`, by table name: a `### Table `name`` heading followed
/// by rows `| `column` | `current type` | `old type` | `codec` | meaning |`.
fn documented_columns(markdown: &str) -> BTreeMap<String, BTreeMap<String, DocumentedColumn>> {
    let mut tables = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        if let Some(heading) = line.strip_prefix("### Table ") {
            current = Some(heading.trim().trim_matches('`').to_owned());
            continue;
        }
        if line.starts_with('#') {
            current = None;
            continue;
        }
        let (Some(table), Some(row)) = (&current, line.strip_prefix('|')) else {
            continue;
        };
        let cells: Vec<String> = row
            .trim_end()
            .trim_end_matches('|')
            .split('|')
            .map(|c| c.trim().to_owned())
            .collect();
        let unquote = |cell: &str| cell.trim_matches('`').to_owned();
        if cells.len() != 5 || !cells[0].starts_with('`') {
            continue; // the header and separator rows
        }
        let previous = tables.entry(table.clone()).or_insert_with(BTreeMap::new).insert(
            unquote(&cells[0]),
            (
                unquote(&cells[1]),
                unquote(&cells[2]),
                unquote(&cells[3]),
                cells[4].clone(),
            ),
        );
        assert!(previous.is_none(), "{table}.{} documented twice", cells[0]);
    }
    tables
}

#[test]
fn every_column_is_documented_with_its_types_and_meaning() {
    let documented = documented_columns(&schema_md());
    let tables = tables();
    assert_eq!(
        documented.keys().collect::<Vec<_>>(),
        {
            let mut names: Vec<_> = tables.iter().map(|t| t.name.to_owned()).collect();
            names.sort();
            names
        }
        .iter()
        .collect::<Vec<_>>(),
        "documented tables differ from the DDL's"
    );
    let mut checked = 0;
    for table in &tables {
        let docs = &documented[table.name];
        for column in &table.columns {
            let Some((current, old, codec, meaning)) = docs.get(column.name) else {
                panic!(
                    "{}.{} is not documented in docs/schema.md",
                    table.name, column.name
                );
            };
            assert_eq!(
                current,
                column.data_type(&CURRENT),
                "{}.{} current type",
                table.name,
                column.name
            );
            assert_eq!(
                old,
                column.data_type(&OLD),
                "{}.{} 18.x type",
                table.name,
                column.name
            );
            let codec_expected = if column.codec.is_empty() {
                "-"
            } else {
                column.codec
            };
            assert_eq!(codec, codec_expected, "{}.{} codec", table.name, column.name);
            assert_eq!(
                meaning, column.comment,
                "{}.{} meaning vs COMMENT",
                table.name, column.name
            );
            checked += 1;
        }
        for name in docs.keys() {
            assert!(
                table.columns.iter().any(|c| c.name == name),
                "docs/schema.md documents {}.{name}, which the DDL does not have",
                table.name
            );
        }
    }
    assert_eq!(checked, 46 + 10 + 24 + 11 + 10);
}

#[test]
fn every_ddl_column_appears_in_both_generations_statements() {
    let config = ClickHouseConfig::default();
    for version in [OLD, CURRENT] {
        let statements: Vec<String> = ddl(&version, &config)
            .into_iter()
            .flat_map(|m| m.statements)
            .collect();
        for table in tables() {
            let create = statements
                .iter()
                .find(|s| s.contains(&format!(".{}\n", table.name)))
                .unwrap_or_else(|| panic!("no CREATE for {} on {version}", table.name));
            let mut position = 0;
            for column in &table.columns {
                let definition = format!("    {} {}", column.name, column.data_type(&version));
                let found = create[position..]
                    .find(&definition)
                    .unwrap_or_else(|| panic!("{} missing or out of order on {version}", column.name));
                position += found + definition.len();
            }
        }
    }
}

/// Where the DDL dump goes: `$EGRESS_DDL_DIR`, else `<target dir>/egress-ddl`.
fn ddl_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("EGRESS_DDL_DIR") {
        return PathBuf::from(dir);
    }
    // The test binary is <target>/<profile>/deps/<name>.
    let exe = std::env::current_exe().expect("test binary path");
    exe.ancestors().nth(3).expect("target dir").join("egress-ddl")
}

#[test]
fn dump_ddl_for_both_generations() {
    let dir = ddl_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let config = ClickHouseConfig::default();
    for (file, version) in [("current.sql", CURRENT), ("old.sql", OLD)] {
        let mut text = format!("-- Egress DDL for ClickHouse {version} (database `egress`, 30 days)\n");
        for migration in ddl(&version, &config) {
            text.push_str(&format!("-- migration {}\n", migration.label()));
            for statement in migration.statements {
                text.push_str(&statement);
                text.push_str(";\n\n");
            }
        }
        std::fs::write(dir.join(file), &text).unwrap();
        // Five schema tables, six rollup tables (minute and hour for three dimensions), probes,
        // the latency rollup.
        assert_eq!(text.matches("CREATE TABLE").count(), 13);
    }
    let retention = egress_query::retention::expired_partitions_query("egress", 30);
    std::fs::write(dir.join("retention.sql"), retention + "\n").unwrap();
    // The column tables of docs/schema.md, for when a column is added.
    let mut reference = String::new();
    for table in tables() {
        reference.push_str(&format!("### Table `{}`\n\n", table.name));
        reference.push_str("| Column | Type (current) | Type (18.x) | Codec (current) | Meaning |\n");
        reference.push_str("|---|---|---|---|---|\n");
        for column in &table.columns {
            let codec = if column.codec.is_empty() {
                "-"
            } else {
                column.codec
            };
            reference.push_str(&format!(
                "| `{}` | `{}` | `{}` | `{codec}` | {} |\n",
                column.name,
                column.data_type(&CURRENT),
                column.data_type(&OLD),
                column.comment
            ));
        }
        reference.push('\n');
    }
    std::fs::write(dir.join("columns.md"), reference).unwrap();
}
