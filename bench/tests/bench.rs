//! End to end: the real `tether-bench` binary (hold, fanout, evict, connect-load, tokens, presence
//! and lobby, a storm migrating between two nodes) against in-process servers on 127.0.0.1:0, asserting on
//! its `--json` output. Figures are not asserted (the machine is
//! shared and noisy), only correctness: everyone connected, nothing lost, every silent client
//! evicted and no healthy one closed.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::{TempDir, WAIT, config, start, stop};
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

/// `--compression` negotiates permessage-deflate, inflates every 2 KiB JSON broadcast and counts
/// fewer bytes on the wire than the same run without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_with_compression_counts_wire_bytes() {
    let s = start(config(&[("compression", "true")])).await;
    let args = [
        "fanout",
        "-n",
        "10",
        "-m",
        "10",
        "--rate",
        "100",
        "--bytes",
        "2048",
        "--json-data",
    ];
    let plain = bench(s.addr, "plain", &args).await;
    let zipped = bench(s.addr, "zipped", &[&args[..], &["--compression"]].concat()).await;
    for run in [&plain, &zipped] {
        assert_eq!(run["received"], 100, "{run}");
        assert_eq!(run["lost"], 0, "{run}");
    }
    assert_eq!(plain["compressed_messages"], 0, "{plain}");
    assert_eq!(zipped["compressed_messages"], 100, "{zipped}");
    let per = |v: &Value| v["wire_bytes_per_delivery"].as_f64().unwrap();
    assert!(per(&plain) > 2048.0, "{plain}");
    assert!(per(&zipped) * 2.0 < per(&plain), "{zipped}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_connect_load_on_an_auth_server() {
    let dir = TempDir::new("bench-auth");
    let secret = dir.join("secret");
    std::fs::write(&secret, "bench-secret-of-at-least-32-bytes-0123456789\n").unwrap();
    let secret = secret.to_string_lossy().to_string();
    let s = start(config(&[
        ("auth", "on"),
        ("auth_hmac_secret_file", &secret),
    ]))
    .await;

    let hold = bench(
        s.addr,
        "hold-tokens",
        &[
            "hold",
            "-n",
            "10",
            "--hold",
            "500ms",
            "--workers",
            "2",
            "--token-secret",
            &secret,
        ],
    )
    .await;
    assert_eq!(hold["established"], 10, "{hold}");
    assert_eq!(hold["tokens"], true, "{hold}");
    assert_eq!(hold["unexpected_closes"], 0, "{hold}");

    let refused = bench(
        s.addr,
        "hold-no-token",
        &["hold", "-n", "2", "--hold", "0s", "--connect-timeout", "2s"],
    )
    .await;
    assert_eq!(refused["established"], 0, "{refused}");
    assert_eq!(refused["connect"]["failures"]["http_401"], 2, "{refused}");

    let load = bench(
        s.addr,
        "connect-load",
        &[
            "connect-load",
            "-n",
            "10",
            "-m",
            "6",
            "-b",
            "4",
            "--batch-interval",
            "50ms",
            "--broadcast-rate",
            "20",
            "--settle",
            "200ms",
            "--token-secret",
            &secret,
        ],
    )
    .await;
    assert_eq!(load["held"], 10, "{load}");
    for phase in ["idle", "loaded"] {
        assert_eq!(load[phase]["established"], 6, "{load}");
        assert_eq!(load[phase]["handshake_ms"]["count"], 6, "{load}");
        assert_eq!(load[phase]["upgrade_ms"]["count"], 6, "{load}");
    }
    assert!(
        load["handshake_p99_loaded_over_idle"].as_f64().unwrap() > 0.0,
        "{load}"
    );
    let bc = &load["broadcast"];
    assert!(bc["sent_ok"].as_u64().unwrap() >= 4, "{load}");
    assert!(bc["held_received"].as_u64().unwrap() >= 40, "{load}");
    assert_eq!(load["unexpected_closes"], 0, "{load}");
    assert_eq!(
        load["new_clients_closed_early"],
        serde_json::json!({}),
        "{load}"
    );
    stop(s).await;
}

/// `storm --migrate-to`: node A runs in this process in `restart` mode (migrate window 1 s),
/// node B is a second server. The bench SIGTERMs `--stop-pid`, this process, where the signal
/// only stops node A. Every client must be back on node B, with the reconnects spread over the
/// window; once with clients that reconnect when closed, once with clients that honour the hint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_migrates_clients_to_another_node_paced() {
    use tokio::signal::unix::{SignalKind, signal};
    let b = start(config(&[])).await;
    let to = format!("ws://{}/ws", b.addr);
    let pid = std::process::id().to_string();
    for honor in [false, true] {
        let a = start(config(&[
            ("shutdown_mode", "restart"),
            ("migrate_window", "1s"),
        ]))
        .await;
        // Listening before the bench starts, so its SIGTERM never meets the default action.
        let mut term = signal(SignalKind::terminate()).expect("cannot handle SIGTERM");
        let trigger = a.trigger.clone();
        let relay = tokio::spawn(async move {
            if term.recv().await.is_some() {
                trigger.signal();
            }
        });
        let mut args = vec![
            "storm",
            "-n",
            "50",
            "--workers",
            "2",
            "--wave-timeout",
            "10s",
            "--migrate-to",
            &to,
            "--stop-pid",
            &pid,
        ];
        if honor {
            args.push("--honor-hint");
        }
        let name = if honor { "migrate-hint" } else { "migrate" };
        let m = bench(a.addr, name, &args).await;
        assert_eq!(
            (m["mode"].as_str(), m["honor_hint"].as_bool()),
            (Some("migrate"), Some(honor)),
            "{m}"
        );
        assert_eq!(m["established"], 50, "{m}");
        assert_eq!(m["reconnected"], 50, "{m}");
        assert_eq!(m["wave2"]["established"], 50, "{m}");
        assert_eq!(m["gave_up"], 0, "{m}");
        let bins: Vec<u64> = serde_json::from_value(m["reconnects_per_100ms"].clone()).unwrap();
        assert_eq!(bins.iter().sum::<u64>(), 50, "{m}");
        assert!(
            m["bins_with_reconnects"].as_u64().unwrap() > 1,
            "not spread: {m}"
        );
        assert!(m["peak_per_100ms"].as_u64().unwrap() < 50, "{m}");
        assert_eq!(m["go_to_reconnected_ms"]["count"], 50, "{m}");
        // Node A told everyone, the last one 49/50 of the window after it began to stop.
        assert_eq!(m["shutdown_with_hint"], 50, "{m}");
        assert_eq!(m["just_closed"], 0, "{m}");
        let last_hint = m["hint_ms"]["max"].as_f64().unwrap();
        assert!(
            (979.0..=981.0).contains(&last_hint),
            "histogram precision 0.1 %: {m}"
        );
        assert!(m["all_back_secs"].as_f64().unwrap() >= 0.98, "{m}");
        let ended = &m["ended_by"];
        let by = |k: &str| ended[k].as_u64().unwrap_or(0);
        if honor {
            // Whichever came first: node A's 1012 at the hint's time, or the client's own close.
            assert_eq!(by("1012") + by("client_closed"), 50, "{m}");
        } else {
            assert_eq!(by("1012"), 50, "{m}");
        }
        // Node A finished its paced restart by itself.
        let stopped = tokio::time::timeout(WAIT, a.join)
            .await
            .expect("node A did not stop")
            .unwrap()
            .unwrap();
        assert_eq!(stopped, tether::Stopped::Clean);
        relay.abort();
    }
    stop(b).await;
}

/// `presence` times the channel presence query against its subscribers; `lobby` churns presence
/// channels and its observers see every `join` / `leave` exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_and_lobby() {
    let s = start(config(&[
        ("presence_channels", "lobby.*,bench.presence.*"),
        ("presence_grace", "200ms"),
    ]))
    .await;
    let p = bench(
        s.addr,
        "presence",
        &["presence", "-n", "30", "--requests", "20", "--workers", "2"],
    )
    .await;
    assert_eq!(p["sessions_answered"], 30, "{p}");
    assert_eq!(p["errors"], 0, "{p}");
    assert!(p["answer_bytes"].as_u64().unwrap() > 30 * 20, "{p}");
    let lobby = bench(
        s.addr,
        "lobby",
        &[
            "lobby",
            "-n",
            "40",
            "-k",
            "3",
            "--duration",
            "2s",
            "--churn",
            "100ms",
            "--settle",
            "1500ms",
            "--workers",
            "2",
        ],
    )
    .await;
    assert!(lobby["churn_ops"].as_u64().unwrap() > 100, "{lobby}");
    assert!(lobby["events"].as_u64().unwrap() > 0, "{lobby}");
    assert_eq!(lobby["exactly_once"], true, "{lobby}");
    assert_eq!(lobby["unexpected_closes"], 0, "{lobby}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_times_single_pushes_and_one_batch_with_every_delivery_checked() {
    let s = start(config(&[])).await;
    let v = bench(s.addr, "batch", &["batch", "-n", "50", "--repeat", "2"]).await;
    assert_eq!(v["scenario"], "batch");
    assert_eq!(v["clients"], 50);
    for field in ["single_pushes_per_s", "batch_pushes_per_s", "ratio"] {
        assert!(v[field].as_f64().is_some_and(|x| x > 0.0), "{field}: {v}");
    }
    assert_eq!(v["batch_each"].as_array().map(Vec::len), Some(2), "{v}");
    stop(s).await;
}
