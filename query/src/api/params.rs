//! Request parameter validation: every value a client sends passes through here before it
//! reaches SQL, as a bounded number, a member of an allow-list, or an address range computed in
//! Rust.
//!
//! In: the query string pairs of one request and the names the endpoint accepts. Out: typed
//! values, or an [`ApiError::BadRequest`] naming the parameter. Unknown and repeated parameters
//! are errors too, so that a typo (`limt=5`) is not silently ignored.

use std::net::{IpAddr, Ipv6Addr};

use axum::extract::rejection::QueryRejection;
use axum::extract::Query;
use ipnet::IpNet;

use super::ApiError;
use crate::schema::to_v6;

/// The query parameters of one request, checked against the endpoint's accepted names.
#[derive(Debug)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Checks that every parameter is one of `accepted` and none is repeated.
    pub fn new(
        query: Result<Query<Vec<(String, String)>>, QueryRejection>,
        accepted: &[&str],
    ) -> Result<Self, ApiError> {
        let Query(pairs) = query.map_err(|e| ApiError::BadRequest(format!("query string: {e}")))?;
        for (index, (name, _)) in pairs.iter().enumerate() {
            if !accepted.contains(&name.as_str()) {
                let shown: String = name.chars().take(64).collect();
                return Err(ApiError::BadRequest(format!(
                    "unknown parameter `{shown}`; accepted: {}",
                    accepted.join(", ")
                )));
            }
            if pairs[..index].iter().any(|(earlier, _)| earlier == name) {
                return Err(ApiError::parameter(name, "given more than once"));
            }
        }
        Ok(Self { pairs })
    }

    /// The raw value of `name`, if given (an empty value counts as not given).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(key, value)| key == name && !value.is_empty())
            .map(|(_, value)| value.as_str())
    }

    /// An integer in `min..=max`, `default` when absent.
    pub fn bounded(&self, name: &str, default: u32, min: u32, max: u32) -> Result<u32, ApiError> {
        match self.get(name) {
            None => Ok(default),
            Some(text) => bounded_integer(name, text, min, max),
        }
    }

    /// One of `T`'s names, `default` when absent.
    pub fn choice<T: Choice>(&self, name: &str, default: T) -> Result<T, ApiError> {
        match self.get(name) {
            None => Ok(default),
            Some(text) => T::ALL
                .iter()
                .copied()
                .find(|choice| choice.name() == text)
                .ok_or_else(|| {
                    let names: Vec<&str> = T::ALL.iter().map(|c| c.name()).collect();
                    ApiError::parameter(name, format!("must be one of {}", names.join(", ")))
                }),
        }
    }
}

/// `text` as an integer in `min..=max`.
pub fn bounded_integer(name: &str, text: &str, min: u32, max: u32) -> Result<u32, ApiError> {
    let value: u64 = text
        .parse()
        .map_err(|_| ApiError::parameter(name, format!("{:?} is not a whole number", shorten(text))))?;
    if value < u64::from(min) || value > u64::from(max) {
        return Err(ApiError::parameter(
            name,
            format!("must be between {min} and {max}, got {value}"),
        ));
    }
    Ok(value as u32)
}

/// A closed set of names accepted by a parameter.
pub trait Choice: Copy + 'static {
    /// Every value, in documentation order.
    const ALL: &'static [Self];
    /// The name a client writes.
    fn name(self) -> &'static str;
}

/// At most 64 characters of `text`, for echoing a bad value back.
pub fn shorten(text: &str) -> String {
    text.chars().take(64).collect()
}

/// An inclusive range of 16-byte addresses (IPv4 as `::ffff:a.b.c.d`), from an address or a CIDR
/// prefix. Bound into SQL as two hex strings compared with `hex(column)` (see `flows.rs` for why
/// not `toFixedString(unhex(?), 16)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressRange {
    /// First address of the range.
    pub first: Ipv6Addr,
    /// Last address of the range.
    pub last: Ipv6Addr,
}

impl AddressRange {
    /// Parses `10.0.0.1`, `10.0.0.0/8`, `2001:db8::/32` (host bits are ignored).
    pub fn parse(name: &str, text: &str) -> Result<Self, ApiError> {
        let bad = || {
            ApiError::parameter(
                name,
                format!("{:?} is not an IP address or CIDR prefix", shorten(text)),
            )
        };
        if text.contains('/') {
            let net: IpNet = text.parse().map_err(|_| bad())?;
            let net = net.trunc();
            Ok(Self {
                first: to_v6(net.network()),
                last: to_v6(net.broadcast()),
            })
        } else {
            let address: IpAddr = text.parse().map_err(|_| bad())?;
            Ok(Self {
                first: to_v6(address),
                last: to_v6(address),
            })
        }
    }

    /// The first address as 32 upper-case hex digits (the bound value).
    pub fn first_hex(&self) -> String {
        hex16(self.first)
    }

    /// The last address as 32 upper-case hex digits (the bound value).
    pub fn last_hex(&self) -> String {
        hex16(self.last)
    }
}

/// An address as the 32 hex digits of its 16 bytes.
pub fn hex16(address: Ipv6Addr) -> String {
    address
        .octets()
        .iter()
        .map(|byte| format!("{byte:02X}"))
        .collect()
}

/// A point in time: Unix seconds or RFC 3339 (`2026-11-25T12:00:00Z`).
pub fn timestamp(name: &str, text: &str) -> Result<u32, ApiError> {
    if let Ok(seconds) = text.parse::<u64>() {
        return u32::try_from(seconds).map_err(|_| ApiError::parameter(name, "is after 2106"));
    }
    let time = chrono::DateTime::parse_from_rfc3339(text).map_err(|_| {
        ApiError::parameter(
            name,
            format!("{:?} is neither Unix seconds nor an RFC 3339 time", shorten(text)),
        )
    })?;
    u32::try_from(time.timestamp()).map_err(|_| ApiError::parameter(name, "is before 1970 or after 2106"))
}

/// A Unix time as RFC 3339 in UTC (`2026-11-25T12:00:00Z`).
pub fn rfc3339(seconds: u32) -> String {
    chrono::DateTime::from_timestamp(i64::from(seconds), 0)
        .map(|time| time.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// IP protocol by number (0-255) or by one of the usual names.
pub fn protocol(name: &str, text: &str) -> Result<u8, ApiError> {
    const NAMES: [(&str, u8); 7] = [
        ("icmp", 1),
        ("tcp", 6),
        ("udp", 17),
        ("gre", 47),
        ("esp", 50),
        ("icmpv6", 58),
        ("sctp", 132),
    ];
    if let Some((_, number)) = NAMES.iter().find(|(known, _)| text.eq_ignore_ascii_case(known)) {
        return Ok(*number);
    }
    text.parse().map_err(|_| {
        ApiError::parameter(
            name,
            format!(
                "{:?} is not a protocol number (0-255) or one of icmp, tcp, udp, gre, esp, icmpv6, sctp",
                shorten(text)
            ),
        )
    })
}

/// A name made of letters, digits and `_ . - / : ( )` and spaces, at most 200 characters: SLA
/// names, subjects and path labels look like that, and nothing else needs to be accepted.
pub fn label_text(name: &str, text: &str) -> Result<String, ApiError> {
    let ok = !text.is_empty()
        && text.chars().count() <= 200
        && text
            .chars()
            .all(|c| c.is_alphanumeric() || " _.-/:()".contains(c));
    if ok {
        Ok(text.to_owned())
    } else {
        Err(ApiError::parameter(
            name,
            "must be 1-200 letters, digits, spaces or `_ . - / : ( )`",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_ranges_cover_prefixes_in_mapped_form() {
        let range = AddressRange::parse("src", "10.1.2.3/24").unwrap();
        assert_eq!(range.first, to_v6("10.1.2.0".parse().unwrap()));
        assert_eq!(range.last, to_v6("10.1.2.255".parse().unwrap()));
        assert_eq!(range.first_hex(), "00000000000000000000FFFF0A010200");
        let single = AddressRange::parse("dst", "2001:db8::1").unwrap();
        assert_eq!(single.first, single.last);
        let v6 = AddressRange::parse("dst", "2001:db8::/32").unwrap();
        assert_eq!(v6.last_hex(), "20010DB8FFFFFFFFFFFFFFFFFFFFFFFF");
        for bad in ["10.0.0.1' OR 1=1 --", "10.0.0.0/33", "x", "10.0.0.1/", "::/129"] {
            let error = AddressRange::parse("src", bad).unwrap_err().to_string();
            assert!(error.contains("`src`"), "{bad}: {error}");
        }
    }

    #[test]
    fn timestamps_accept_seconds_and_rfc3339() {
        assert_eq!(timestamp("from", "1700000000").unwrap(), 1_700_000_000);
        assert_eq!(timestamp("from", "2023-11-14T22:13:20Z").unwrap(), 1_700_000_000);
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert!(timestamp("from", "yesterday").is_err());
        assert!(timestamp("from", "99999999999").is_err());
    }

    #[test]
    fn protocols_by_name_or_number() {
        assert_eq!(protocol("proto", "TCP").unwrap(), 6);
        assert_eq!(protocol("proto", "17").unwrap(), 17);
        assert!(protocol("proto", "256").is_err());
        assert!(protocol("proto", "6; DROP").is_err());
    }

    #[test]
    fn bounded_integers_name_the_parameter() {
        assert_eq!(bounded_integer("limit", "10", 1, 100).unwrap(), 10);
        let error = bounded_integer("limit", "1000", 1, 100).unwrap_err().to_string();
        assert!(
            error.contains("`limit`") && error.contains("between 1 and 100"),
            "{error}"
        );
        assert!(bounded_integer("limit", "-1", 1, 100).is_err());
        assert!(bounded_integer("limit", "99999999999999999999999", 1, 100).is_err());
    }

    #[test]
    fn label_text_refuses_quotes_and_semicolons() {
        assert!(label_text("name", "transit-utilisation").is_ok());
        assert!(label_text("subject", "edge1 / et-0/0/1 (Transit A)").is_ok());
        for bad in ["x' UNION SELECT 1 --", "a;b", "", "a\"b"] {
            assert!(label_text("name", bad).is_err(), "{bad}");
        }
    }
}
