//! Grafana's side of a dashboard query: the dashboards of `dashboards/` read from disk, and the
//! expansion of their SQL as Grafana and the ClickHouse data source plugin
//! (`grafana-clickhouse-datasource` v4) do it before the server sees it.
//!
//! In: a dashboard's JSON and a [`Context`] (time range, `$__interval_s`, the value of every
//! variable). Out: the SQL text the server receives ([`expand`]): first the front end's
//! `$__conditionalAll` and template variables, then the back end's `$__timeFilter`,
//! `$__fromTime`, `$__toTime` and `$__interval_s`. Any other macro, or a `$` left over, is an
//! error, so a dashboard using something this expansion does not know fails loudly instead of
//! being measured or checked with the wrong SQL.
//!
//! Used by `query/tests/dashboards.rs` (every query returns rows on 18.16 and current servers)
//! and by `egress-bench query` (every query timed over 100 M flows): one expansion for both.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::Value;

/// The `dashboards/` directory of the repository.
pub fn dashboards_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dashboards")
}

/// One dashboard file.
#[derive(Debug)]
pub struct Dashboard {
    /// File name, e.g. `egress-overview.json`.
    pub file: String,
    /// The whole dashboard JSON.
    pub json: Value,
}

impl Dashboard {
    /// The dashboard uid, e.g. `egress-overview`.
    pub fn uid(&self) -> &str {
        self.json["uid"].as_str().unwrap_or_default()
    }

    /// Every panel, those inside collapsed rows included.
    pub fn panels(&self) -> Vec<&Value> {
        let mut panels = Vec::new();
        for panel in self.json["panels"].as_array().into_iter().flatten() {
            panels.push(panel);
            panels.extend(panel["panels"].as_array().into_iter().flatten());
        }
        panels
    }

    /// The template variables, in dashboard order (a variable may use the ones before it).
    pub fn variables(&self) -> Vec<&Value> {
        self.json["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
            .collect()
    }
}

/// Every `*.json` dashboard in `dir`, sorted by file name.
pub fn load_dashboards(dir: &Path) -> anyhow::Result<Vec<Dashboard>> {
    let mut dashboards = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        let json: Value = serde_json::from_str(&text).with_context(|| path.display().to_string())?;
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        dashboards.push(Dashboard { file, json });
    }
    dashboards.sort_by(|a, b| a.file.cmp(&b.file));
    Ok(dashboards)
}

/// The `$__interval_s` Grafana gives a panel showing `range_seconds` on `max_data_points`
/// points: the range divided by the points, rounded as Grafana's `roundInterval` does (to 1, 2,
/// 5, 10, 15, 20, 30 s, 1, 2, 5, 10, 15, 20, 30 min, 1, 2, 3, 6 h; never below 1 s). A panel
/// about 1,000 pixels wide gets 60 s over 24 hours and 20 s over 6 hours.
pub fn interval_s(range_seconds: u32, max_data_points: u32) -> u32 {
    let raw_ms = u64::from(range_seconds) * 1000 / u64::from(max_data_points.max(1));
    // (upper bound of the raw interval, rounded interval), both in milliseconds.
    const STEPS: [(u64, u64); 17] = [
        (1_500, 1_000),
        (3_500, 2_000),
        (7_500, 5_000),
        (12_500, 10_000),
        (17_500, 15_000),
        (25_000, 20_000),
        (45_000, 30_000),
        (90_000, 60_000),
        (210_000, 120_000),
        (450_000, 300_000),
        (750_000, 600_000),
        (1_050_000, 900_000),
        (1_500_000, 1_200_000),
        (2_700_000, 1_800_000),
        (5_400_000, 3_600_000),
        (9_000_000, 7_200_000),
        (16_200_000, 10_800_000),
    ];
    let rounded = STEPS
        .iter()
        .find(|(bound, _)| raw_ms < *bound)
        .map_or(21_600_000, |(_, step)| *step);
    (rounded / 1000) as u32
}

// ---------------------------------------------------------------------------------------------
// Expansion of the plugin's macros and Grafana's template variables.

/// A variable's value at query time.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// "All" is selected (Grafana's `$__all`).
    pub all: bool,
    /// The values the variable stands for: the selection, or every option under "All".
    pub values: Vec<String>,
    /// A multi-value variable: Grafana hands the plugin an array even for one value.
    pub multi: bool,
}

/// Time range, interval and variables of one panel refresh.
#[derive(Debug, Clone)]
pub struct Context {
    /// Start of the dashboard time range, Unix seconds (`$__fromTime`).
    pub from: u32,
    /// End of the dashboard time range, Unix seconds (`$__toTime`).
    pub to: u32,
    /// `$__interval_s`; see [`interval_s`] for the value Grafana picks.
    pub interval_s: u32,
    /// Every variable of the dashboard by name.
    pub variables: BTreeMap<String, Resolved>,
}

/// The arguments of the macro whose `(` is at the start of `text`, split at the commas of the
/// first level of parentheses, and the length up to the closing `)` (the plugin's
/// `getMacroArgs`).
fn macro_args(text: &str) -> Option<(Vec<&str>, usize)> {
    let mut depth = 0;
    let mut last = 1;
    let mut args = Vec::new();
    for (index, byte) in text.bytes().enumerate() {
        match byte {
            b'(' => depth += 1,
            b')' => depth -= 1,
            b',' if depth == 1 => {
                args.push(&text[last..index]);
                last = index + 1;
            }
            _ => {}
        }
        if matches!(byte, b'(' | b')') && depth == 0 {
            args.push(&text[last..index]);
            return Some((args, index + 1));
        }
    }
    None
}

/// The name in `$name` or `${name}`.
fn variable_name(text: &str) -> Option<&str> {
    let rest = text.strip_prefix('$')?;
    let rest = rest.strip_prefix('{').unwrap_or(rest);
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    (end > 0).then(|| &rest[..end])
}

/// The front end's `$__conditionalAll(condition, $variable)`: `1=1` when the variable is "All"
/// (or empty), else the condition; innermost (last) first, as the plugin does.
fn conditional_all(sql: &str, context: &Context) -> Result<String, String> {
    const MACRO: &str = "$__conditionalAll(";
    let mut sql = sql.to_owned();
    while let Some(index) = sql.rfind(MACRO) {
        let open = index + MACRO.len() - 1;
        let (args, _) = macro_args(&sql[open..]).ok_or("unclosed $__conditionalAll")?;
        let [condition, variable] = args[..] else {
            return Err(format!("$__conditionalAll takes 2 arguments: {args:?}"));
        };
        let name = variable_name(variable.trim()).ok_or(format!("not a variable: {variable}"))?;
        let value = context
            .variables
            .get(name)
            .ok_or(format!("$__conditionalAll of unknown variable {name}"))?;
        let phrase = if value.all || value.values.join(",").is_empty() {
            "1=1".to_owned()
        } else {
            condition.to_owned()
        };
        let original = format!("{MACRO}{condition},{variable})");
        sql = sql.replacen(&original, &phrase, 1);
    }
    Ok(sql)
}

/// Grafana's template variables: `$name`, `${name}`, `${name:format}`. Without a format the
/// plugin quotes arrays (`'a','b'`) and leaves single values as they are. `$__...` names are
/// macros for the back end and stay.
fn template_variables(sql: &str, context: &Context) -> Result<String, String> {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(index) = rest.find('$') {
        out.push_str(&rest[..index]);
        let after = &rest[index + 1..];
        let (inner, consumed) = match after.strip_prefix('{') {
            Some(braced) => {
                let end = braced.find('}').ok_or("unclosed ${")?;
                (&braced[..end], end + 2)
            }
            None => {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], end)
            }
        };
        let (name, format) = match inner.split_once(':') {
            Some((name, format)) => (name, Some(format)),
            None => (inner, None),
        };
        if name.starts_with("__") || name.is_empty() {
            out.push('$');
            rest = after;
            continue;
        }
        let value = context
            .variables
            .get(name)
            .ok_or(format!("unknown variable ${name}"))?;
        let quoted = || {
            value
                .values
                .iter()
                .map(|v| format!("'{}'", v.replace('\'', "\\'")))
                .collect::<Vec<_>>()
                .join(",")
        };
        let text = match format {
            Some("singlequote") => quoted(),
            Some("raw") => value.values.join(","),
            Some(other) => return Err(format!("format {other} of ${name} not handled")),
            None if value.multi => quoted(),
            None => value.values.join(","),
        };
        out.push_str(&text);
        rest = &after[consumed..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The back end's macros (the plugin's `pkg/macros` through `sqlds`): `$__timeFilter(col)`,
/// `$__fromTime`, `$__toTime`, `$__interval_s`. Any other macro is an error.
fn backend_macros(sql: &str, context: &Context) -> Result<String, String> {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(index) = rest.find("$__") {
        out.push_str(&rest[..index]);
        let after = &rest[index + 3..];
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        let name = &after[..end];
        let mut consumed = end;
        let mut args = Vec::new();
        if after[end..].starts_with('(') {
            let close = after[end..].find(')').ok_or(format!("unclosed $__{name}("))?;
            args = after[end + 1..end + close].split(',').map(str::trim).collect();
            consumed = end + close + 1;
        }
        let from = format!("toDateTime({})", context.from);
        let to = format!("toDateTime({})", context.to);
        let text = match (name, args.as_slice()) {
            ("timeFilter", [column]) => format!("{column} >= {from} AND {column} <= {to}"),
            ("fromTime", []) => from,
            ("toTime", []) => to,
            ("interval_s", []) => context.interval_s.max(1).to_string(),
            _ => return Err(format!("macro $__{name}({args:?}) is not one of the dashboards'")),
        };
        out.push_str(&text);
        rest = &after[consumed..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The SQL the server receives for `raw`: `$__conditionalAll` and variables in the browser,
/// then the time macros in the plugin's back end.
pub fn expand(raw: &str, context: &Context) -> Result<String, String> {
    let sql = conditional_all(raw, context)?;
    let sql = template_variables(&sql, context)?;
    let sql = backend_macros(&sql, context)?;
    if sql.contains('$') {
        return Err(format!("unexpanded `$` in {sql}"));
    }
    Ok(sql)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_follows_the_plugin() {
        let context = Context {
            from: 1_700_000_000,
            to: 1_700_003_600,
            interval_s: 0,
            variables: BTreeMap::from([
                (
                    "path".to_owned(),
                    Resolved {
                        all: false,
                        values: vec!["a / b (O'Neil)".into(), "c".into()],
                        multi: true,
                    },
                ),
                (
                    "site".to_owned(),
                    Resolved {
                        all: true,
                        values: vec!["par".into(), "ams".into()],
                        multi: true,
                    },
                ),
                (
                    "database".to_owned(),
                    Resolved {
                        all: false,
                        values: vec!["egress".into()],
                        multi: false,
                    },
                ),
            ]),
        };
        let raw = "SELECT 1 FROM ${database}.t WHERE $__timeFilter( minute ) AND \
                   $__conditionalAll(p IN (${path:singlequote}), $path) AND \
                   $__conditionalAll(s IN (${site:singlequote}), ${site}) AND x < $__toTime - 300 \
                   AND s IN ($site) AND k = intDiv(toUInt32(minute), $__interval_s)";
        assert_eq!(
            expand(raw, &context).unwrap(),
            "SELECT 1 FROM egress.t WHERE minute >= toDateTime(1700000000) AND minute <= \
             toDateTime(1700003600) AND p IN ('a / b (O\\'Neil)','c') AND 1=1 AND \
             x < toDateTime(1700003600) - 300 AND s IN ('par','ams') AND k = intDiv(toUInt32(minute), 1)"
        );
        assert!(expand("SELECT $__timeInterval(t)", &context).is_err());
        assert!(expand("SELECT ${nosuch}", &context).is_err());
        assert!(expand("SELECT $__conditionalAll(a, $nosuch)", &context).is_err());
    }

    #[test]
    fn intervals_round_like_grafana() {
        assert_eq!(interval_s(86_400, 1_000), 60);
        assert_eq!(interval_s(6 * 3_600, 1_000), 20);
        assert_eq!(interval_s(3_600, 1_000), 5);
        assert_eq!(interval_s(30 * 86_400, 1_000), 1_800);
    }

    #[test]
    fn the_repository_dashboards_load() {
        let dashboards = load_dashboards(&dashboards_dir()).unwrap();
        assert!(dashboards.len() >= 5, "{} dashboards", dashboards.len());
        assert!(dashboards
            .iter()
            .all(|d| !d.uid().is_empty() && !d.panels().is_empty()));
    }
}
