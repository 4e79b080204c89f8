//! Test support shared by the end-to-end tests: real components started on loopback and torn
//! down on drop. Nothing here is a mock: [`clickhouse`] runs Debian's `clickhouse-server`,
//! [`exporters`] runs softflowd, pmacctd, nfcapd/nfdump and sfacctd, and [`traffic`] writes a
//! traffic pcap whose totals are known. [`netns`] builds network namespaces with a direct and a
//! delayed path (root only).

pub mod clickhouse;
pub mod exporters;
pub mod grafana;
pub mod netns;
pub mod tls;
pub mod traffic;
