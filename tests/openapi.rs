//! `docs/openapi.json` against the router: every route the router answers is in the document and
//! every operation of the document is a route (method and path template both ways), and the
//! document is what `GET /api/openapi.json` serves, behind the API key like the rest of `/api/`.
//! Schemathesis (`scripts/schemathesis.sh`) checks the answers against it.

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::Value;

/// The methods an OpenAPI path item may hold.
const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Operations the document describes before the router has them: docs/protocol.md §14, being
/// built on other branches. EMPTY THIS (`&[]`) once they are merged; the test then demands
/// that the router serves each of them.
const PLANNED: &[(&str, &str)] = &[];

fn document() -> Value {
    let text = include_str!("../docs/openapi.json");
    serde_json::from_str(text).expect("docs/openapi.json is JSON")
}

/// Every (METHOD, path template) the document describes.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("paths");
    let mut out = BTreeSet::new();
    for (path, item) in paths {
        for method in METHODS {
            if item.get(*method).is_some() {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

#[test]
fn every_route_is_documented_and_every_operation_is_a_route() {
    let doc = document();
    let documented = documented(&doc);
    let routed: BTreeSet<(String, String)> = tether::routes()
        .into_iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let planned: BTreeSet<(String, String)> = PLANNED
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();

    let undocumented: Vec<_> = routed.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "served but not in docs/openapi.json: {undocumented:?}"
    );
    let unrouted: Vec<_> = documented
        .difference(&routed)
        .filter(|r| !planned.contains(*r))
        .collect();
    assert!(
        unrouted.is_empty(),
        "in docs/openapi.json but not served: {unrouted:?}"
    );
    // A planned route the router now has means PLANNED is stale: the test would otherwise stop
    // noticing when the document drops it.
    let arrived: Vec<_> = planned.intersection(&routed).collect();
    assert!(
        arrived.is_empty(),
        "served now, remove from PLANNED in tests/openapi.rs: {arrived:?}"
    );
    let undescribed: Vec<_> = planned.difference(&documented).collect();
    assert!(
        undescribed.is_empty(),
        "PLANNED but not in docs/openapi.json: {undescribed:?}"
    );
}

#[test]
fn every_operation_has_an_id_answers_and_a_reachable_schema() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        doc["components"]["securitySchemes"]["apiKey"]["scheme"],
        "bearer"
    );
    let text = doc.to_string();
    let mut ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            let Some(op) = item.get(*method) else {
                continue;
            };
            let id = op["operationId"].as_str().unwrap_or_default();
            assert!(!id.is_empty(), "{method} {path}: no operationId");
            assert!(ids.insert(id.to_string()), "operationId {id} twice");
            let responses = op["responses"].as_object().expect("responses");
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{method} {path}: no success answer"
            );
            // The API's operations say what a missing key gets; the pages are open.
            let open = op.get("security") == Some(&Value::Array(vec![]));
            assert_eq!(
                path.starts_with("/api/"),
                !open,
                "{method} {path}: /api/* is behind the key, nothing else is"
            );
            if !open {
                assert!(responses.contains_key("401"), "{method} {path}: no 401");
            }
        }
    }
    // Every `$ref` names something the document has.
    for part in text.split("\"$ref\":\"#/").skip(1) {
        let target = &part[..part.find('"').unwrap_or(part.len())];
        let mut at = &doc;
        for step in target.split('/') {
            at = &at[step];
        }
        assert!(!at.is_null(), "dangling $ref #/{target}");
    }
}

#[tokio::test]
async fn the_document_is_served_behind_the_api_key() {
    let s = start(config(&[("api_key", "k-openapi")])).await;
    let (status, head, body) = http(s.addr, "GET", "/api/openapi.json", &[], "").await;
    assert_eq!(status, 401, "{body}");
    assert!(head.to_ascii_lowercase().contains("application/json"));

    let auth = [("Authorization", "Bearer k-openapi")];
    let (status, head, body) = http(s.addr, "GET", "/api/openapi.json", &auth, "").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    assert_eq!(json(&body), document());

    let (status, _, body) = http(s.addr, "POST", "/api/openapi.json", &auth, "{}").await;
    assert_eq!(status, 405, "{body}");
    stop(s).await;
}

/// A Schemathesis finding: the demo page, the browser client and the dashboard answered a
/// method they do not take with 404, as if they did not exist; now 405 with `Allow`, like
/// `/health`, `/metrics` and the API.
#[tokio::test]
async fn pages_answer_other_methods_with_405_and_allow() {
    let s = start(config(&[])).await;
    for path in [
        "/",
        "/tether.js",
        "/dashboard",
        "/dashboard/data",
        "/health",
    ] {
        let (status, head, body) = http(s.addr, "TRACE", path, &[], "").await;
        assert_eq!(status, 405, "{path}: {body}");
        assert!(
            head.to_ascii_lowercase().contains("allow: get"),
            "{path}: {head}"
        );
        assert_eq!(json(&body)["error"]["code"], "method_not_allowed");
    }
    // A page that is off is still not there at all.
    let off = start(config(&[("demo_page", "false")])).await;
    let (status, _, _) = http(off.addr, "POST", "/", &[], "").await;
    assert_eq!(status, 404);
    stop(off).await;
    stop(s).await;
}
