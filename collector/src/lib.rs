//! Egress collector: export datagrams in, rows in ClickHouse out.
//!
//! The stages, in data-flow order:
//! [`listener`] (UDP datagrams in) → [`decode`] (NetFlow v5/v9, IPFIX, sFlow; pure) →
//! [`normalise`] (one record shape) → [`enrich`] (sampling from config) → [`batch`] →
//! [`sink`] (ClickHouse, or null). [`pipeline`] owns the wiring and the shutdown order.
//! Around them: [`config`], [`metrics`], [`capture`] (pcap files, for `egress decode`) and
//! [`simulate`] (virtual exporters), [`http`] (the metrics endpoint). Beside the pipeline:
//! [`probe`], the active prober (TCP connect / ICMP echo RTT per egress path into `probes`).
//! Across restarts: [`state`] keeps the decoders' templates, sampling rates and sequence state
//! in a file.

pub mod batch;
pub mod capture;
pub mod config;
pub mod decode;
pub mod decode_file;
pub mod enrich;
pub mod http;
pub mod listener;
pub mod metrics;
pub mod normalise;
pub mod pipeline;
pub mod probe;
pub mod simulate;
pub mod sink;
pub mod spool;
pub mod state;

/// The hash map of the per-datagram lookups (exporters, template scopes, samplers): `foldhash`
/// with a per-process random seed. The standard SipHash was a tenth of the receive thread's
/// time at 100 k datagrams/s; foldhash is several times faster on these small keys and still
/// seeded, so spoofed sources cannot aim collisions at it (and the maps are bounded anyway by
/// `collector.max_exporters`).
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
