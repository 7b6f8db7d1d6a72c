//! End to end: the real `tether-bench` binary (hold, fanout, evict) against an in-process server
//! on 127.0.0.1:0, asserting on its `--json` output. Figures are not asserted (the machine is
//! shared and noisy), only correctness: everyone connected, nothing lost, every silent client
//! evicted and no healthy one closed.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::{config, start, stop};
use serde_json::Value;
use tokio::process::Command;

/// Longest one bench run may take.
const RUN: Duration = Duration::from_secs(30);

/// Runs `tether-bench <args> --url ws://addr/ws --json FILE --quiet` and returns the JSON.
async fn bench(addr: std::net::SocketAddr, name: &str, args: &[&str]) -> Value {
    let file =
        std::env::temp_dir().join(format!("tether-bench-{}-{name}.json", std::process::id()));
    let url = format!("ws://{addr}/ws");
    let json = file.to_string_lossy().to_string();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tether-bench"));
    cmd.args(args)
        .args(["--url", &url, "--json", &json, "--quiet"])
        .env("RUST_LOG", "warn")
        .kill_on_drop(true);
    let out = tokio::time::timeout(RUN, cmd.output())
        .await
        .expect("bench run took too long")
        .expect("cannot run tether-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench {name} failed: {stdout}\n{stderr}"
    );
    let text = std::fs::read_to_string(&file).expect("no JSON written");
    let _ = std::fs::remove_file(&file);
    serde_json::from_str(&text).expect("bench JSON is not JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_and_fanout() {
    let s = start(config(&[])).await;
    let hold = bench(
        s.addr,
        "hold",
        &[
            "hold",
            "-n",
            "20",
            "--hold",
            "1s",
            "--heartbeat",
            "200ms",
            "--workers",
            "2",
        ],
    )
    .await;
    assert_eq!(hold["established"], 20, "{hold}");
    assert_eq!(hold["connect"]["failed"], 0, "{hold}");
    assert_eq!(hold["unexpected_closes"], 0, "{hold}");
    assert!(hold["heartbeats_sent"].as_u64().unwrap() >= 20, "{hold}");
    assert_eq!(hold["acks_received"], hold["heartbeats_sent"], "{hold}");

    let fan = bench(
        s.addr,
        "fanout",
        &[
            "fanout", "-n", "10", "-m", "20", "--rate", "100", "--bytes", "64",
        ],
    )
    .await;
    assert_eq!(fan["established"], 10, "{fan}");
    assert_eq!(fan["sent_ok"], 20, "{fan}");
    assert_eq!(fan["expected"], 200, "{fan}");
    assert_eq!(fan["received"], 200, "{fan}");
    assert_eq!(fan["lost"], 0, "{fan}");
    assert_eq!(fan["duplicated"], 0, "{fan}");
    assert_eq!(fan["server_delivered"], 200, "{fan}");
    assert_eq!(fan["latency_ms"]["count"], 200, "{fan}");

    let push = bench(
        s.addr,
        "push",
        &["fanout", "-n", "5", "-m", "10", "--rate", "100", "--push"],
    )
    .await;
    assert_eq!(
        (push["expected"].as_u64(), push["lost"].as_u64()),
        (Some(10), Some(0)),
        "{push}"
    );
    stop(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evict_silent_clients_only() {
    let s = start(config(&[
        ("heartbeat_interval", "200ms"),
        ("heartbeat_timeout", "500ms"),
        ("reap_interval", "100ms"),
    ]))
    .await;
    let ev = bench(
        s.addr,
        "evict",
        &[
            "evict",
            "--silent",
            "3",
            "--healthy",
            "3",
            "--reap-ms",
            "100",
        ],
    )
    .await;
    assert_eq!(ev["advertised_timeout_ms"], 500, "{ev}");
    assert_eq!(ev["evicted"], 3, "{ev}");
    assert_eq!(ev["close_codes"]["4001"], 3, "{ev}");
    assert_eq!(ev["not_evicted"], 0, "{ev}");
    assert_eq!(ev["early"], 0, "{ev}");
    assert_eq!(ev["healthy_wrongly_closed"], 0, "{ev}");
    stop(s).await;
}
