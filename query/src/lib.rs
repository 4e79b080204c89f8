//! Egress query side: the ClickHouse storage contract ([`schema`]), the version-aware
//! migrations that create it ([`migrate`]), and the client settings both services share
//! ([`connection`]). SLA evaluation and the HTTP API build on these.

pub mod connection;
pub mod migrate;
pub mod schema;
