//! ClickHouse connection settings shared by the collector and the query service.
//! (Skeleton: being written.)
