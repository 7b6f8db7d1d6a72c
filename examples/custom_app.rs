//! Embedding tether in an application: a custom client message type answered right away, and a
//! push from the application's own code when background work finishes.
//!
//! Run: `cargo run --example custom_app -- 127.0.0.1:8080`, connect to
//! `ws://127.0.0.1:8080/ws?client_id=alice` and send `{"type":"start_job","data":{"n":10}}`:
//! you get `job_accepted` at once and `job_done` (with the sum 1..=n) from the worker.

use tether::{Config, Handled, Handler, RawValue, Session};
use tokio::sync::mpsc;

/// A job handed from the socket handler to the application's worker.
struct Job {
    /// Who to notify when it is done.
    client_id: String,
    /// Input of the job.
    n: u64,
}

/// The application's message handler: it only validates and hands work off.
struct App {
    /// Queue to the worker; sending never blocks the session.
    jobs: mpsc::UnboundedSender<Job>,
}

impl Handler for App {
    fn on_message(&self, session: &Session<'_>, kind: &str, data: Option<&RawValue>) -> Handled {
        if kind != "start_job" {
            return Handled::No;
        }
        let n = data
            .and_then(|d| serde_json::from_str::<serde_json::Value>(d.get()).ok())
            .and_then(|v| v["n"].as_u64());
        match n {
            Some(n) if n <= 1_000_000 => {
                let _ = self.jobs.send(Job {
                    client_id: session.client_id().to_string(),
                    n,
                });
                session.send("job_accepted", Some(&format!("{{\"n\":{n}}}")));
            }
            _ => {
                session.send(
                    "job_rejected",
                    Some(r#"{"reason":"data.n must be an integer up to 1000000"}"#),
                );
            }
        }
        Handled::Yes
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let mut config = Config::default();
    if let Some(addr) = std::env::args().nth(1) {
        config.listen = addr
            .parse()
            .map_err(|_| std::io::Error::other("usage: custom_app [ADDR]"))?;
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
    let server = tether::Server::with_handler(config.clone(), App { jobs: tx })?;
    let handle = server.handle();
    // The application's own worker: when a job finishes it pushes to every tab of that client.
    tokio::spawn(async move {
        while let Some(job) = rx.recv().await {
            let sum: u64 = (1..=job.n).sum();
            let data = format!("{{\"n\":{},\"sum\":{sum}}}", job.n);
            // Awaited: in a cluster the push goes through Redis to whichever node holds the tab.
            if let Err(e) = handle.push(&job.client_id, "job_done", Some(&data)).await {
                eprintln!("job {} not delivered: {e}", job.n);
            }
        }
    });
    let (trigger, signal) = tether::shutdown::channel();
    tether::shutdown::forward_os_signals(trigger)?;
    server.run(tether::bind(config.listen)?, signal).await?;
    Ok(())
}
