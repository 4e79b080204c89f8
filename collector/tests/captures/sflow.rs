//! sFlow checks of the capture test; the sFlow decoder's helper fills this in.

pub fn check(
    entry: &serde_json::Value,
    decoded: &egress_collector::decode_file::DecodedCapture,
) -> Vec<String> {
    let _ = (entry, decoded);
    Vec::new()
}
