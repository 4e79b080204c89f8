//! Numbers and times as the status page writes them: rates in bit/s with SI prefixes, ratios in
//! percent, counts with thousands separators, ages relative to the page's time.
//!
//! In: plain numbers. Out: short text (escaped later by the template like any other text).

/// `value` with an SI prefix and three significant digits: `950`, `1.23 k`, `45.6 M`.
fn si(value: f64) -> (f64, &'static str) {
    const PREFIXES: [(f64, &str); 5] = [(1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")];
    let magnitude = value.abs();
    PREFIXES
        .iter()
        .find(|(scale, _)| magnitude >= *scale)
        .map(|(scale, prefix)| (value / scale, *prefix))
        .unwrap_or((value, ""))
}

/// Three significant digits, without a trailing `.0`.
fn significant(value: f64) -> String {
    let magnitude = value.abs();
    let decimals = if magnitude >= 100.0 || magnitude == 0.0 {
        0
    } else if magnitude >= 10.0 {
        1
    } else {
        2
    };
    let text = format!("{value:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

/// A rate in bit/s: `0 bit/s`, `4.54 kbit/s`, `9.8 Gbit/s`.
pub(super) fn bits_per_second(bps: f64) -> String {
    let (value, prefix) = si(bps);
    format!("{} {prefix}bit/s", significant(value))
}

/// A compact quantity with an SI prefix and no unit: `12`, `3.4k`, `5G`.
pub(super) fn compact(value: f64) -> String {
    let (scaled, prefix) = si(value);
    format!("{}{prefix}", significant(scaled))
}

/// A ratio as a percentage: `0.1234` is `12.3 %`; below 0.1 % two decimals.
pub(super) fn percent(ratio: f64) -> String {
    let percent = ratio * 100.0;
    if percent != 0.0 && percent.abs() < 0.1 {
        format!("{percent:.2} %")
    } else {
        format!("{percent:.1} %")
    }
}

/// A count with thin-space thousands separators: `12 345 678`.
pub(super) fn count(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push('\u{202f}');
        }
        out.push(digit);
    }
    out
}

/// Milliseconds: `0.42 ms`, `12.3 ms`, `250 ms`.
pub(super) fn milliseconds(ms: f64) -> String {
    format!("{} ms", significant(ms))
}

/// How long before `now` the Unix time `then` was: `just now`, `42 s ago`, `5 min ago`,
/// `3 h 10 min ago`, `2 d ago`. A time after `now` (clock skew) reads `just now`.
pub(super) fn age(now: u32, then: u32) -> String {
    let seconds = now.saturating_sub(then);
    match seconds {
        0..=4 => "just now".to_owned(),
        5..=119 => format!("{seconds} s ago"),
        120..=3_599 => format!("{} min ago", seconds / 60),
        3_600..=86_399 => {
            let minutes = seconds / 60 % 60;
            if minutes == 0 {
                format!("{} h ago", seconds / 3_600)
            } else {
                format!("{} h {minutes} min ago", seconds / 3_600)
            }
        }
        _ => format!("{} d ago", seconds / 86_400),
    }
}

/// A duration to the minute: `42 s`, `5 min`, `1 h 59 min`, `3 d 4 h`.
pub(super) fn duration(seconds: f64) -> String {
    let seconds = if seconds.is_finite() {
        seconds.max(0.0) as u64
    } else {
        0
    };
    let (days, hours, minutes) = (seconds / 86_400, seconds / 3_600 % 24, seconds / 60 % 60);
    match seconds {
        0..=119 => format!("{seconds} s"),
        120..=3_599 => format!("{minutes} min"),
        3_600..=86_399 if minutes == 0 => format!("{hours} h"),
        3_600..=86_399 => format!("{hours} h {minutes} min"),
        _ if hours == 0 => format!("{days} d"),
        _ => format!("{days} d {hours} h"),
    }
}

/// A length of time in words: `5 min`, `6 h`, `1 d`.
pub(super) fn span(seconds: u32) -> String {
    match seconds {
        0..=119 => format!("{seconds} s"),
        120..=7_199 => format!("{} min", seconds / 60),
        7_200..=172_799 => format!("{} h", seconds / 3_600),
        _ => format!("{} d", seconds / 86_400),
    }
}

/// Unix seconds as `2026-11-03 14:05:09 UTC`.
pub(super) fn utc(time: u32) -> String {
    chrono::DateTime::from_timestamp(i64::from(time), 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_use_si_prefixes_and_three_digits() {
        assert_eq!(bits_per_second(0.0), "0 bit/s");
        assert_eq!(bits_per_second(950.0), "950 bit/s");
        assert_eq!(bits_per_second(4_541.33), "4.54 kbit/s");
        assert_eq!(bits_per_second(45_600_000.0), "45.6 Mbit/s");
        assert_eq!(bits_per_second(10e9), "10 Gbit/s");
        assert_eq!(compact(5e9), "5G");
        assert_eq!(compact(0.9), "0.9");
    }

    #[test]
    fn percentages_counts_and_times() {
        assert_eq!(percent(0.9), "90.0 %");
        assert_eq!(percent(0.000_454), "0.05 %");
        assert_eq!(percent(0.0), "0.0 %");
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1_234_567), "1\u{202f}234\u{202f}567");
        assert_eq!(milliseconds(12.34), "12.3 ms");
        assert_eq!(age(1_000, 1_000), "just now");
        assert_eq!(age(1_000, 958), "42 s ago");
        assert_eq!(age(10_000, 10_000 - 300), "5 min ago");
        assert_eq!(age(100_000, 100_000 - 3 * 3_600 - 600), "3 h 10 min ago");
        assert_eq!(age(1_000_000, 1_000_000 - 2 * 86_400), "2 d ago");
        assert_eq!(age(5, 50), "just now");
        assert_eq!(span(300), "5 min");
        assert_eq!(duration(42.4), "42 s");
        assert_eq!(duration(300.0), "5 min");
        assert_eq!(duration(7_140.0), "1 h 59 min");
        assert_eq!(duration(7_200.0), "2 h");
        assert_eq!(duration(3.0 * 86_400.0 + 4.0 * 3_600.0), "3 d 4 h");
        assert_eq!(duration(f64::NAN), "0 s");
        assert_eq!(span(21_600), "6 h");
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
    }
}
