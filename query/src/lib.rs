//! Egress query side: the ClickHouse storage contract ([`schema`]), the version-aware
//! migrations that create it ([`migrate`]), the client settings both services share
//! ([`connection`]) and partition-dropping retention for servers without TTLs ([`retention`]).
//! SLA evaluation and the HTTP API build on these.

pub mod api;
pub mod cluster;
pub mod connection;
pub mod label;
pub mod migrate;
pub mod model;
pub mod probes;
pub mod retention;
pub mod rollups;
pub mod schema;
pub mod sla;
