//! The `tether` binary: configuration precedence (file < env < flag), field-named config errors,
//! `--help`, and exit status on SIGTERM (0 when clean, 130 when a second signal cuts the drain).

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use tokio::process::Command;

fn tether() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tether"));
    c.env_clear()
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

async fn advertised_interval(mut cmd: Command) -> u64 {
    cmd.arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--shutdown-mode")
        .arg("restart");
    let (child, addr) = spawn(cmd).await;
    let (ws, welcome) = connect(addr, "cfg").await;
    drop(ws);
    signal(&child, libc::SIGTERM);
    assert_eq!(exit_code(child).await, 0, "clean shutdown exits 0");
    welcome["data"]["heartbeat_interval_ms"].as_u64().unwrap()
}

#[tokio::test]
async fn precedence_is_file_then_env_then_flag() {
    let dir = std::env::temp_dir().join(format!("tether-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tether.toml");
    std::fs::write(
        &file,
        "heartbeat_interval = \"5s\"\nheartbeat_timeout = \"60s\"\n",
    )
    .unwrap();

    let mut c = tether();
    c.arg("--config").arg(&file);
    assert_eq!(advertised_interval(c).await, 5000, "file over default");

    let mut c = tether();
    c.arg("--config")
        .arg(&file)
        .env("TETHER_HEARTBEAT_INTERVAL", "6s");
    assert_eq!(advertised_interval(c).await, 6000, "env over file");

    let mut c = tether();
    c.arg("--config")
        .arg(&file)
        .env("TETHER_HEARTBEAT_INTERVAL", "6s")
        .arg("--heartbeat-interval")
        .arg("7s");
    assert_eq!(advertised_interval(c).await, 7000, "flag over env");
    let _ = std::fs::remove_dir_all(&dir);
}

async fn startup_error(mut cmd: Command) -> String {
    let out = tokio::time::timeout(WAIT, cmd.output())
        .await
        .expect("did not exit")
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "config errors exit 2");
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[tokio::test]
async fn unknown_keys_and_bad_values_stop_startup_naming_the_field() {
    let dir = std::env::temp_dir().join(format!("tether-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "heartbeat_timout = \"5s\"\n").unwrap();
    let mut c = tether();
    c.arg("--config").arg(&file);
    assert!(startup_error(c).await.contains("heartbeat_timout"));

    let mut c = tether();
    c.arg("--heartbeat-timeout").arg("soon");
    assert!(startup_error(c).await.contains("heartbeat_timeout"));

    let mut c = tether();
    c.env("TETHER_SEND_QUEUE", "lots");
    assert!(startup_error(c).await.contains("send_queue"));

    // Checked where the server is built (http owns the routes), still a config error.
    let mut c = tether();
    c.args(["--listen", "127.0.0.1:0", "--ws-path", "/health"]);
    assert!(
        startup_error(c)
            .await
            .contains("ws_path: `/health` collides")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn help_documents_every_key() {
    let out = tether()
        .stderr(Stdio::null())
        .stdout(Stdio::piped())
        .arg("--help")
        .output()
        .await
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for key in tether::config::KEYS {
        let flag = format!("--{}", key.replace('_', "-"));
        assert!(help.contains(&flag), "--help lacks {flag}");
    }
}

#[tokio::test]
async fn second_signal_during_drain_exits_130() {
    let mut c = tether();
    c.arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--shutdown-timeout")
        .arg("60s");
    let (child, addr) = spawn(c).await;
    let (mut ws, _) = connect(addr, "stubborn").await;
    signal(&child, libc::SIGTERM);
    assert_eq!(recv_json(&mut ws).await["type"], "shutdown");
    signal(&child, libc::SIGINT);
    assert_eq!(exit_code(child).await, 130);
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        recv_close(&mut ws, Duration::from_secs(1)),
    )
    .await;
}

#[tokio::test]
async fn worker_threads_sets_the_runtime_size() {
    let mut c = tether();
    c.arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--worker-threads")
        .arg("3");
    let (child, _addr) = spawn(c).await;
    let pid = child.id().expect("running");
    let workers = || {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|name| name.starts_with("tokio-rt-worker"))
            .count()
    };
    // tokio starts its workers in the background: they may still be coming up when the
    // listening line is logged, so watch /proc (bounded) until the count settles.
    let deadline = std::time::Instant::now() + WAIT;
    while workers() < 3 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(workers(), 3, "runtime worker threads");
    signal(&child, libc::SIGTERM);
    assert_eq!(exit_code(child).await, 0);
}

#[tokio::test]
async fn an_exposed_api_refuses_to_start_and_an_empty_key_is_an_error() {
    // A public listener without a key would open /api/* to the network: refused before binding
    // (so the test never listens beyond loopback).
    let mut c = tether();
    c.arg("--listen").arg("0.0.0.0:0");
    let err = startup_error(c).await;
    assert!(
        err.contains("api_key") && err.contains("api_open"),
        "the refusal names the fix: {err}"
    );
    // `TETHER_API_KEY=` left empty by a template means a forgotten key, not "no key".
    let mut c = tether();
    c.arg("--listen")
        .arg("127.0.0.1:0")
        .env("TETHER_API_KEY", "");
    let err = startup_error(c).await;
    assert!(err.contains("api_key") && err.contains("empty"), "{err}");
}

/// Reads the binary's log until a line holding each of `needles` was seen; the lines found, in
/// the order of `needles` (None for one the log ended without).
async fn log_lines(child: &mut tokio::process::Child, needles: &[&str]) -> Vec<Option<String>> {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut found = vec![None; needles.len()];
    let Some(stderr) = child.stderr.take() else {
        return found;
    };
    let mut lines = BufReader::new(stderr).lines();
    let _ = tokio::time::timeout(WAIT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            for (slot, needle) in found.iter_mut().zip(needles) {
                if slot.is_none() && line.contains(needle) {
                    *slot = Some(line.clone());
                }
            }
            if found.iter().all(Option::is_some) {
                return;
            }
        }
    })
    .await;
    found
}

#[tokio::test]
async fn behind_a_proxy_without_auth_or_key_the_start_log_says_so() {
    let mut c = tether();
    c.args(["--listen", "127.0.0.1:0", "--trusted-proxies", "127.0.0.1"]);
    let mut child = c.spawn().unwrap();
    let found = log_lines(&mut child, &["auth = \"off\"", "no api_key"]).await;
    child.kill().await.unwrap();
    assert!(
        found[0]
            .as_deref()
            .is_some_and(|l| l.contains("any client id")),
        "no auth warning: {found:?}"
    );
    assert!(
        found[1].as_deref().is_some_and(|l| l.contains("401")),
        "no api_key warning: {found:?}"
    );
}
