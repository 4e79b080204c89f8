//! `GET /openapi.json`: the OpenAPI 3.0 document of every route.
//!
//! Hand-written with `serde_json::json!` rather than generated with `utoipa`: the parameters are
//! parsed by hand (to name them in errors and refuse unknown ones), so there are no typed
//! extractor structs for a generator to read, and one more proc-macro crate would slow every
//! build on a two-core machine. The test `api_openapi` checks that the document and the router
//! list the same (method, path) pairs, so the two cannot drift apart.

use axum::Json;
use serde_json::{json, Value};

use super::flows::{MAX_LIMIT, MAX_RANGE};
use super::slas::MAX_POINTS;

fn query(name: &str, description: &str, schema: Value, required: bool) -> Value {
    json!({ "name": name, "in": "query", "required": required, "description": description, "schema": schema })
}

fn path_parameter(name: &str, description: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "description": description, "schema": { "type": "string" } })
}

fn integer(minimum: u32, maximum: u32, default: u32) -> Value {
    json!({ "type": "integer", "minimum": minimum, "maximum": maximum, "default": default })
}

fn one_of(values: &[&str], default: Option<&str>) -> Value {
    let mut schema = json!({ "type": "string", "enum": values });
    if let Some(default) = default {
        schema["default"] = json!(default);
    }
    schema
}

fn answer(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "type": "object" } } }
    })
}

fn operation(summary: &str, parameters: Vec<Value>, ok_status: &str, ok: &str) -> Value {
    json!({
        "summary": summary,
        "parameters": parameters,
        "responses": {
            ok_status: answer(ok),
            "400": { "$ref": "#/components/responses/BadRequest" },
            "503": { "$ref": "#/components/responses/Unavailable" },
            "504": { "$ref": "#/components/responses/Timeout" }
        }
    })
}

/// The document.
pub fn openapi_document() -> Value {
    let window = |default, max| {
        query(
            "window",
            "Length of the window ending now, in seconds.",
            integer(60, max, default),
            false,
        )
    };
    let dimensions = [
        "src_host", "dst_host", "dst_as", "path", "dst_port", "src_port", "proto", "exporter",
    ];
    let silence_schema = json!({
        "type": "object",
        "required": ["matchers", "ends_at", "created_by"],
        "additionalProperties": false,
        "properties": {
            "matchers": { "type": "array", "minItems": 1, "maxItems": super::alerts::MAX_MATCHERS, "items": {
                "type": "object", "required": ["name", "value"], "additionalProperties": false,
                "properties": {
                    "name": { "type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$" },
                    "value": { "type": "string", "maxLength": 1024 },
                    "isRegex": { "type": "boolean", "default": false },
                    "isEqual": { "type": "boolean", "default": true }
                }
            }},
            "starts_at": { "type": "string", "format": "date-time", "description": "Default: now." },
            "ends_at": { "type": "string", "format": "date-time" },
            "created_by": { "type": "string", "minLength": 1, "maxLength": 200 },
            "comment": { "type": "string", "maxLength": 4096 }
        }
    });
    let mut create_silence = operation(
        "Create a silence",
        vec![],
        "201",
        "The new silence's id: {\"id\": ...}",
    );
    create_silence["requestBody"] = json!({
        "required": true,
        "content": { "application/json": { "schema": silence_schema } }
    });
    create_silence["responses"]["413"] = json!({ "$ref": "#/components/responses/TooLarge" });
    let mut expire_silence = operation(
        "Expire a silence now",
        vec![path_parameter("id", "Silence id (letters, digits, `-`, `_`).")],
        "200",
        "The silence is expired.",
    );
    expire_silence["responses"]["404"] = json!({ "$ref": "#/components/responses/NotFound" });
    let mut history = operation(
        "Results of one SLA over a window, oldest first",
        vec![
            path_parameter("name", "A configured SLA name."),
            window(86_400, 31 * 86_400),
            query(
                "subject",
                "Only this subject (e.g. a path label or a host).",
                json!({ "type": "string", "maxLength": 200 }),
                false,
            ),
        ],
        "200",
        &format!("At most the newest {MAX_POINTS} results."),
    );
    history["responses"]["404"] = json!({ "$ref": "#/components/responses/NotFound" });

    let mut trace = operation(
        "Hop trace through one probed egress path (UDP datagrams with rising TTL)",
        vec![],
        "200",
        "{\"path\", \"target\", \"hops\": [{\"ttl\", \"address\", \"rtt_ms\"}]}; address and rtt_ms are null for a hop that did not answer",
    );
    trace["requestBody"] = json!({
        "required": true,
        "content": { "application/json": { "schema": {
            "type": "object",
            "required": ["path", "target"],
            "additionalProperties": false,
            "properties": {
                "path": { "type": "string", "maxLength": 200, "description": "A path of the prober's configuration." },
                "target": { "type": "string", "maxLength": 255, "description": "Host or address, optionally with :port (ignored)." },
                "max_hops": { "type": "integer", "minimum": 1, "maximum": super::trace::MAX_HOPS, "default": super::trace::MAX_HOPS }
            }
        }}}
    });
    trace["responses"]["404"] = json!({ "$ref": "#/components/responses/NotFound" });
    let mut last_trace = operation(
        "The last hop trace through each probed path, made on demand or when a latency alert started firing; with `path`, that path's only",
        vec![query("path", "Only this egress path.", json!({ "type": "string", "maxLength": 200 }), false)],
        "200",
        "{\"traces\": [{\"path\", \"target\", \"time\", \"hops\" or \"error\"}]}, or that one trace with `path`",
    );
    last_trace["responses"]["404"] = json!({ "$ref": "#/components/responses/NotFound" });

    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Egress query API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Egress paths, top talkers, flow search, SLA status, alerts and silences. \
                            Errors are JSON {\"error\": \"...\"} naming the parameter."
        },
        "paths": {
            "/": { "get": {
                "summary": "Status page for people: egress paths with throughput, utilisation, trend and round trips, SLA verdicts, pending and firing alerts, collector health per exporter. Server-rendered HTML with inline SVG charts and no script; reloads itself every 30 s. Always 200: a section whose data could not be read says so",
                "responses": { "200": { "description": "HTML page", "content": { "text/html": { "schema": { "type": "string" } } } } }
            }},
            "/health": { "get": operation("The process is alive", vec![], "200", "{\"status\": \"ok\"}") },
            "/ready": { "get": operation("ClickHouse answers SELECT 1 within 2 s (else 503 with the reason)", vec![], "200", "{\"status\": \"ready\"}") },
            "/metrics": { "get": {
                "summary": "Prometheus text of the API's own request counters and latencies",
                "responses": { "200": { "description": "OpenMetrics text", "content": { "application/openmetrics-text": { "schema": { "type": "string" } } } } }
            }},
            "/openapi.json": { "get": operation("This document", vec![], "200", "OpenAPI 3.0 document") },
            "/api/v1/paths": { "get": operation(
                "Every egress path with throughput, utilisation and status (ok, idle, no_data)",
                vec![window(300, 86_400)], "200", "{\"paths\": [...]}") },
            "/api/v1/paths/p95": { "get": operation(
                "95th percentile of the 5-minute rates of every path with a capacity over a calendar month (empty 5-minute buckets count as 0, as in burstable billing), against its committed rate",
                vec![query("month", "The month, `YYYY-MM`; default the current month (up to now).", json!({ "type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$" }), false)],
                "200", "{\"month\": \"2026-11\", \"paths\": [{\"path\", \"p95_bps\", \"max_bps\", \"committed_bps\", \"capacity_bps\", \"buckets\", \"buckets_with_data\", \"above_commit\"}]}") },
            "/api/v1/probes": { "get": operation(
                "Active probe results per path, target and method over a window: probes, failures, p50/p95/p99 round trip of the probes that answered (null when none did) and the latest probe",
                vec![
                    window(super::probes::WINDOW.0, super::probes::WINDOW.2),
                    query("path", "Only this egress path (the prober's path label).", json!({ "type": "string", "maxLength": 200 }), false),
                ],
                "200", "{\"window\", \"from\", \"to\", \"source\": \"probes\", \"probes\": [{\"path\", \"target\", \"method\", \"probes\", \"failures\", \"failure_ratio\", \"p50_ms\", \"p95_ms\", \"p99_ms\", \"last_time\", \"last_success\", \"last_rtt_ms\", \"last_error\"}]}") },
            "/api/v1/latency": { "get": operation(
                "Round-trip percentiles over time per egress path, one series per source: `probes` (answered active probes) and `flows` (outbound flows' exporter-measured RTT); a bucket without samples has no point",
                vec![
                    query("window", "Length of the window ending now, in seconds; at most 1000 steps.", integer(super::latency::WINDOW.1, super::latency::WINDOW.2, super::latency::WINDOW.0), false),
                    query("step", "Bucket length in seconds; at least window / 1000.", integer(super::latency::STEP.1, super::latency::STEP.2, super::latency::STEP.0), false),
                    query("path", "Only this egress path.", json!({ "type": "string", "maxLength": 200 }), false),
                    query("resolution", "raw: exact percentiles from raw rows; minute: t-digest percentiles from the latency_1m rollup (step a multiple of 60); auto: raw up to one day, minute beyond.", one_of(&["auto", "raw", "minute"], Some("auto")), false),
                ],
                "200", "{\"window\", \"step\", \"resolution\", \"from\", \"to\", \"series\": [{\"path\", \"source\": \"probes\" | \"flows\", \"points\": [{\"time\", \"samples\", \"p50_ms\", \"p95_ms\", \"p99_ms\"}]}]}") },
            "/api/v1/trace": { "post": trace, "get": last_trace },
            "/api/v1/top": { "get": operation(
                "Top keys by scaled bytes over a window",
                vec![
                    query("by", "Dimension to group by.", one_of(&dimensions, None), true),
                    window(3_600, 7 * 86_400),
                    query("limit", "Number of entries.", integer(1, 1_000, 10), false),
                    query("direction", "Traffic direction.", one_of(&["outbound", "inbound", "any"], Some("outbound")), false),
                ], "200", "{\"top\": [...]}") },
            "/api/v1/flows": { "get": operation(
                "Stored flow records, newest first",
                vec![
                    query("from", "Start (Unix seconds or RFC 3339); default `to` minus 15 minutes.", json!({ "type": "string" }), false),
                    query("to", "End, exclusive (Unix seconds or RFC 3339); default now.", json!({ "type": "string" }), false),
                    query("src", "Source address or CIDR prefix.", json!({ "type": "string" }), false),
                    query("dst", "Destination address or CIDR prefix.", json!({ "type": "string" }), false),
                    query("port", "Source or destination port.", integer(0, 65_535, 0), false),
                    query("proto", "IP protocol number or name (tcp, udp, icmp, icmpv6, gre, esp, sctp).", json!({ "type": "string" }), false),
                    query("exporter", "Exporter address or model name.", json!({ "type": "string" }), false),
                    query("limit", "Most records returned.", integer(1, MAX_LIMIT, 100), false),
                ], "200", &format!("{{\"flows\": [...]}}; the range is at most {MAX_RANGE} seconds")) },
            "/api/v1/slas": { "get": operation("Latest result per SLA and subject", vec![], "200", "{\"results\": [...], \"not_evaluated\": [...]}") },
            "/api/v1/slas/{name}/history": { "get": history },
            "/api/v1/alerts": { "get": operation("Pending, firing and recently resolved alerts", vec![], "200", "{\"alerts\": [...]}") },
            "/api/v1/silences": {
                "get": operation("Every silence", vec![], "200", "{\"silences\": [...]}"),
                "post": create_silence
            },
            "/api/v1/silences/{id}": { "delete": expire_silence }
        },
        "components": {
            "schemas": {
                "Error": { "type": "object", "required": ["error"], "properties": { "error": { "type": "string" } } }
            },
            "responses": {
                "BadRequest": error_response("A parameter is missing, unknown or out of bounds; the message names it."),
                "NotFound": error_response("No such route, SLA or silence."),
                "TooLarge": error_response("The request body is larger than 64 KiB."),
                "Unavailable": error_response("ClickHouse or the alert state did not answer."),
                "Timeout": error_response("The request took longer than 10 seconds.")
            }
        }
    })
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
    })
}

/// `GET /openapi.json`.
pub(crate) async fn serve() -> Json<Value> {
    Json(openapi_document())
}
