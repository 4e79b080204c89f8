//! Test support shared by the end-to-end tests: real components started on loopback and torn
//! down on drop. Nothing here is a mock: [`clickhouse`] runs Debian's `clickhouse-server`,
//! [`exporters`] runs softflowd, pmacctd, nfcapd/nfdump and sfacctd, and [`traffic`] writes a
//! traffic pcap whose totals are known.

pub mod clickhouse;
pub mod exporters;
pub mod traffic;
