//! Scale-out on ClickHouse's own cluster engine: the single-server DDL of [`crate::migrate`]
//! rewritten for a cluster.
//!
//! In: one statement of the single-server schema (as [`crate::migrate::ddl`] makes it) and the
//! `[clickhouse]` cluster settings. Out: the statements that build the same schema on a
//! cluster. Every table `T` becomes:
//!
//! - `T_local` on every node, with the single-server engine, or its `Replicated*` form when the
//!   node has a keeper (`ReplicatedMergeTree('/clickhouse/tables/{shard}/<database>/T_local',
//!   '{replica}')`, the macros coming from each server's configuration);
//! - `T` on every node: `Distributed(<cluster>, <database>, T_local, <sharding key>)` with the
//!   same columns. Writers insert into `T` and readers query `T`, exactly as on one server, so
//!   no query of the product changes. The client sets `insert_distributed_sync = 1`
//!   ([`crate::connection::client`]): an insert succeeds once every shard holds its rows.
//!
//! Materialized views read and write the local tables (`FROM flows_local`, `TO
//! flows_1m_path_local`): each shard rolls up its own rows, and readers `sum()`/`-Merge` across
//! shards through the Distributed rollup tables, which is what they do anyway. `ALTER TABLE ...
//! ADD COLUMN` goes to both the local and the Distributed table.
//!
//! Sharding keys: `rand()` spreads rows evenly, for every table except the `ReplacingMergeTree`
//! hour rollups, whose recomputed rows must land on the shard holding the rows they replace;
//! those are sharded by `toUInt32(hour)`.
//!
//! How the statements reach the nodes: with `cluster_nodes` set, [`crate::migrate::migrate`]
//! runs them on every node (no keeper needed); otherwise once, with `ON CLUSTER <cluster>`
//! (the servers' distributed DDL queue does the rest). Statements are rewritten as text, which
//! is safe because every statement comes from this crate's own generators in a fixed shape;
//! the unit tests below pin that shape.

use crate::connection::ClickHouseConfig;

/// Suffix of the table that holds each node's rows.
pub const LOCAL_SUFFIX: &str = "_local";

/// How to turn single-server statements into cluster statements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDdl {
    /// Cluster name (from `remote_servers`).
    pub cluster: String,
    /// Database of the tables.
    pub database: String,
    /// `Replicated*` engines for the local tables.
    pub replicated: bool,
    /// Append `ON CLUSTER <cluster>` (DDL sent once) rather than running on each node.
    pub on_cluster: bool,
}

impl ClusterDdl {
    /// The rewriting for `config`, or `None` without a cluster. `replicated` is the resolved
    /// [`crate::connection::Replication`] for the node the DDL runs on.
    pub fn for_config(config: &ClickHouseConfig, replicated: bool) -> Option<Self> {
        config.cluster.as_ref().map(|cluster| Self {
            cluster: cluster.clone(),
            database: config.database.clone(),
            replicated,
            on_cluster: config.cluster_nodes.is_empty(),
        })
    }

    fn on_cluster_clause(&self) -> String {
        if self.on_cluster {
            format!(" ON CLUSTER {}", self.cluster)
        } else {
            String::new()
        }
    }

    /// The cluster statements for one single-server statement.
    pub fn rewrite(&self, statement: &str) -> Vec<String> {
        let db = &self.database;
        let on = self.on_cluster_clause();
        if let Some(rest) = statement.strip_prefix("CREATE DATABASE IF NOT EXISTS ") {
            return vec![format!("CREATE DATABASE IF NOT EXISTS {}{on}", rest.trim())];
        }
        if let Some(rest) = statement.strip_prefix(&format!("CREATE TABLE IF NOT EXISTS {db}.")) {
            return self.rewrite_table(rest);
        }
        if let Some(rest) = statement.strip_prefix(&format!("CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.")) {
            return vec![self.rewrite_view(rest)];
        }
        if let Some(rest) = statement.strip_prefix(&format!("ALTER TABLE {db}.")) {
            let (table, action) = rest.split_once(' ').unwrap_or((rest, ""));
            let local = format!("ALTER TABLE {db}.{table}{LOCAL_SUFFIX}{on} {action}");
            // Storage settings belong to the table that stores rows; a Distributed table has
            // none of MergeTree's.
            if action.starts_with("MODIFY SETTING ") {
                return vec![local];
            }
            return vec![local, format!("ALTER TABLE {db}.{table}{on} {action}")];
        }
        vec![statement.to_owned()]
    }

    /// `T\n(columns)\nENGINE = E\n...` → the local table and the Distributed table over it.
    fn rewrite_table(&self, rest: &str) -> Vec<String> {
        let (db, on) = (&self.database, self.on_cluster_clause());
        let (table, body) = rest.split_once('\n').unwrap_or((rest, ""));
        let table = table.trim();
        let local = format!("{table}{LOCAL_SUFFIX}");
        let engine_line = body
            .lines()
            .find_map(|l| l.strip_prefix("ENGINE = "))
            .unwrap_or("MergeTree");
        let engine = if self.replicated {
            replicated_engine(engine_line, &format!("/clickhouse/tables/{{shard}}/{db}/{local}"))
        } else {
            engine_line.to_owned()
        };
        let body = body.replacen(
            &format!("ENGINE = {engine_line}"),
            &format!("ENGINE = {engine}"),
            1,
        );
        let sharding_key = if engine_line.starts_with("ReplacingMergeTree") {
            "toUInt32(hour)"
        } else {
            "rand()"
        };
        vec![
            format!("CREATE TABLE IF NOT EXISTS {db}.{local}{on}\n{body}"),
            format!(
                "CREATE TABLE IF NOT EXISTS {db}.{table}{on} AS {db}.{local}\n\
                 ENGINE = Distributed({}, {db}, {local}, {sharding_key})",
                self.cluster
            ),
        ]
    }

    /// `V TO db.T AS SELECT ... FROM db.S ...` → the view on the local tables.
    fn rewrite_view(&self, rest: &str) -> String {
        let (db, on) = (&self.database, self.on_cluster_clause());
        let (view, select) = rest.split_once(" TO ").unwrap_or((rest, ""));
        let (target, select) = select.split_once(" AS").unwrap_or((select, ""));
        let select = select.replace(&format!("FROM {db}."), "\u{0}");
        // Every `FROM db.S` reads `S_local`: append the suffix to the identifier that follows.
        let mut out = String::new();
        for (index, piece) in select.split('\u{0}').enumerate() {
            if index == 0 {
                out.push_str(piece);
                continue;
            }
            let end = piece
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(piece.len());
            out.push_str(&format!(
                "FROM {db}.{}{LOCAL_SUFFIX}{}",
                &piece[..end],
                &piece[end..]
            ));
        }
        format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{view}{on} TO {}{LOCAL_SUFFIX} AS{out}",
            target.trim()
        )
    }
}

/// The `Replicated*` form of a single-server engine, with the keeper path and `{replica}`
/// first and the engine's own parameters after them.
fn replicated_engine(engine: &str, path: &str) -> String {
    let (name, params) = match engine.split_once('(') {
        Some((name, params)) => (name, params.strip_suffix(')').unwrap_or(params).trim()),
        None => (engine, ""),
    };
    let mut args = format!("'{path}', '{{replica}}'");
    if !params.is_empty() {
        args.push_str(&format!(", {params}"));
    }
    format!("Replicated{name}({args})")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::ServerVersion;

    fn ddl(replicated: bool, on_cluster: bool) -> ClusterDdl {
        ClusterDdl {
            cluster: "edge".into(),
            database: "egress".into(),
            replicated,
            on_cluster,
        }
    }

    fn all_statements() -> Vec<String> {
        crate::migrate::ddl(&ServerVersion::new(18, 16, 1), &ClickHouseConfig::default())
            .into_iter()
            .flat_map(|m| m.statements)
            .collect()
    }

    #[test]
    fn every_table_becomes_a_local_table_under_a_distributed_one() {
        let flows = all_statements()
            .into_iter()
            .find(|s| s.contains("egress.flows\n"))
            .unwrap();
        let out = ddl(false, false).rewrite(&flows);
        assert_eq!(out.len(), 2);
        assert!(
            out[0].starts_with("CREATE TABLE IF NOT EXISTS egress.flows_local\n("),
            "{}",
            out[0]
        );
        assert!(out[0].contains("ENGINE = MergeTree\n"), "{}", out[0]);
        assert_eq!(
            out[1],
            "CREATE TABLE IF NOT EXISTS egress.flows AS egress.flows_local\n\
             ENGINE = Distributed(edge, egress, flows_local, rand())"
        );
    }

    #[test]
    fn replicated_engines_keep_their_parameters_after_path_and_replica() {
        assert_eq!(
            replicated_engine("SummingMergeTree((scaled_bytes, records))", "/p"),
            "ReplicatedSummingMergeTree('/p', '{replica}', (scaled_bytes, records))"
        );
        assert_eq!(
            replicated_engine("ReplacingMergeTree(closed_at)", "/p"),
            "ReplicatedReplacingMergeTree('/p', '{replica}', closed_at)"
        );
        assert_eq!(
            replicated_engine("MergeTree", "/p"),
            "ReplicatedMergeTree('/p', '{replica}')"
        );
        assert_eq!(
            replicated_engine("AggregatingMergeTree()", "/p"),
            "ReplicatedAggregatingMergeTree('/p', '{replica}')"
        );
        let hour = all_statements()
            .into_iter()
            .find(|s| s.contains("egress.flows_1h_path\n"))
            .unwrap();
        let out = ddl(true, true).rewrite(&hour);
        assert!(out[0].starts_with("CREATE TABLE IF NOT EXISTS egress.flows_1h_path_local ON CLUSTER edge\n"));
        assert!(out[0].contains(
            "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/egress/flows_1h_path_local', '{replica}', closed_at)"
        ));
        // Recomputed hours replace rows on the shard that holds them.
        assert!(out[1].ends_with("Distributed(edge, egress, flows_1h_path_local, toUInt32(hour))"));
    }

    #[test]
    fn views_read_and_write_local_tables() {
        for view in all_statements()
            .iter()
            .filter(|s| s.starts_with("CREATE MATERIALIZED VIEW"))
        {
            let out = ddl(false, false).rewrite(view);
            assert_eq!(out.len(), 1);
            let text = &out[0];
            assert!(text.contains("_local AS\n"), "{text}");
            assert!(
                text.contains("FROM egress.flows_local") || text.contains("FROM egress.probes_local"),
                "{text}"
            );
            assert!(!text.contains("FROM egress.flows\n") && !text.contains("FROM egress.probes\n"));
        }
    }

    #[test]
    fn alters_go_to_both_tables_and_every_statement_is_rewritten() {
        let out = ddl(false, true).rewrite("ALTER TABLE egress.flows ADD COLUMN x UInt8");
        assert_eq!(
            out,
            [
                "ALTER TABLE egress.flows_local ON CLUSTER edge ADD COLUMN x UInt8",
                "ALTER TABLE egress.flows ON CLUSTER edge ADD COLUMN x UInt8"
            ]
        );
        assert_eq!(
            ddl(false, true).rewrite("CREATE DATABASE IF NOT EXISTS egress"),
            ["CREATE DATABASE IF NOT EXISTS egress ON CLUSTER edge"]
        );
        // Every statement of the schema reaches the local tables (or is the database itself).
        for statement in all_statements() {
            let out = ddl(false, false).rewrite(&statement);
            assert!(
                out.iter().any(|s| s.contains("_local")) || out[0].starts_with("CREATE DATABASE"),
                "{out:?}"
            );
        }
    }

    #[test]
    fn storage_settings_go_to_the_local_table_only() {
        let out = ddl(false, true)
            .rewrite("ALTER TABLE egress.flows MODIFY SETTING non_replicated_deduplication_window = 1000");
        assert_eq!(
            out,
            vec!["ALTER TABLE egress.flows_local ON CLUSTER edge MODIFY SETTING non_replicated_deduplication_window = 1000"]
        );
    }
}
