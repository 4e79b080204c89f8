//! Fuzz target: configuration text in, a validated `Config` or a `ConfigError` out; a panic,
//! OOM or timeout is a finding. The same text's `key=value` lines are also applied as `--set`
//! overrides and `EGRESS__` environment variables, which go through their own TOML value parser.
#![no_main]

use egress_collector::config::Config;
use libfuzzer_sys::fuzz_target;

/// Override lines taken from one input at most.
const MAX_OVERRIDES: usize = 16;

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let _ = Config::from_toml_str(text, "fuzz");
    let sets: Vec<String> = text
        .lines()
        .filter(|line| line.contains('='))
        .take(MAX_OVERRIDES)
        .map(str::to_owned)
        .collect();
    let env = sets.iter().filter_map(|set| {
        let (key, value) = set.split_once('=')?;
        let variable = format!("EGRESS__{}", key.trim().replace('.', "__").to_ascii_uppercase());
        Some((variable, value.trim().to_owned()))
    });
    let _ = Config::load(None, env, &sets);
});
