//! Normalise: the one record shape every decoder produces.
//!
//! In: whatever a decoder parsed. Out: [`FlowRecord`] (one `flows` row) and
//! [`InterfaceCounterRecord`] (one `interface_counters` row). The structs are the storage
//! contract's row types themselves, so a decoded record goes to ClickHouse without a copy.

pub use egress_query::schema::{
    from_v6, to_v6, Direction, FlowRow as FlowRecord, FlowType,
    InterfaceCounterRow as InterfaceCounterRecord, SamplingSource,
};
