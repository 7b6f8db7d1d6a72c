//! A Sentinel-managed Redis on loopback: one master, one replica and three `redis-sentinel`
//! processes (the distribution's package) with short failure detection, so a killed master is
//! replaced within a few seconds. Everything is stopped however the test ends.

use std::time::{Duration, Instant};

use super::redis::{Redis, Topology, inline};
use super::{Proc, TempDir, free_port, program};

/// The name the sentinels monitor the master under.
pub const MASTER: &str = "tether-m";

/// A master, its replica and three sentinels.
pub struct Sentinels {
    /// The first master (killed by a failover test).
    pub master: Redis,
    /// Its replica, promoted when the master dies.
    pub replica: Redis,
    /// The sentinels' ports.
    pub ports: Vec<u16>,
    /// The password of every server and sentinel in the set, if any.
    pub password: Option<String>,
    procs: Vec<Proc>,
    dir: TempDir,
}

fn binary() -> std::path::PathBuf {
    program("redis-sentinel", &["/usr/bin/redis-sentinel"]).expect(
        "redis-sentinel not found: run scripts/install-test-deps.sh (Debian package `redis-sentinel`)",
    )
}

impl Sentinels {
    /// Starts the set and waits (bounded) until the sentinels know the replica and each other.
    pub fn start() -> Sentinels {
        Sentinels::start_with(None)
    }

    /// The same, with `password` required by every server and sentinel (`requirepass`), as
    /// the Redis documentation recommends for a set that needs one.
    pub fn start_with(password: Option<&str>) -> Sentinels {
        let auth: Vec<&str> = match password {
            Some(p) => vec!["--requirepass", p, "--masterauth", p],
            None => vec![],
        };
        let master = Redis::start_with(&auth);
        let of = master.port.to_string();
        let mut args = vec!["--replicaof", "127.0.0.1", &of];
        args.extend(&auth);
        let replica = Redis::start_with(&args);
        let dir = TempDir::new("sentinel");
        let mut set = Sentinels {
            master,
            replica,
            ports: Vec::new(),
            password: password.map(str::to_string),
            procs: Vec::new(),
            dir,
        };
        let auth_conf = match password {
            Some(p) => format!("requirepass {p}\nsentinel auth-pass {MASTER} {p}\n"),
            None => String::new(),
        };
        for i in 0..3 {
            let port = free_port();
            // Sentinel rewrites its file, so each has its own, in the set's directory.
            let conf = set.dir.join(format!("sentinel-{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                     sentinel monitor {MASTER} 127.0.0.1 {m} 2\n\
                     sentinel down-after-milliseconds {MASTER} 1000\n\
                     sentinel failover-timeout {MASTER} 5000\n\
                     sentinel parallel-syncs {MASTER} 1\n{auth_conf}",
                    dir = set.dir.path.display(),
                    m = set.master.port,
                ),
            )
            .expect("write sentinel.conf");
            let p = Proc::spawn(
                "redis-sentinel",
                std::process::Command::new(binary())
                    .arg(&conf)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null()),
            );
            set.procs.push(p);
            set.ports.push(port);
        }
        set.wait("the replica in sync", |s| {
            s.ask(s.replica.port, "INFO replication")
                .is_some_and(|r| r.contains("master_link_status:up"))
        });
        set.wait("three sentinels that see the replica", |s| {
            s.ports.iter().all(|&p| {
                s.ask(p, &format!("SENTINEL CKQUORUM {MASTER}"))
                    .is_some_and(|r| r.contains("3 usable"))
                    && s.ask(p, &format!("SENTINEL REPLICAS {MASTER}"))
                        .is_some_and(|r| r.contains(&s.replica.port.to_string()))
            })
        });
        set
    }

    /// One inline command to a server or sentinel of the set, authenticated when it has a
    /// password (the reply to AUTH is cut off).
    pub fn ask(&self, port: u16, line: &str) -> Option<String> {
        match &self.password {
            None => inline(port, line),
            Some(p) => {
                let r = inline(port, &format!("AUTH {p}\r\n{line}"))?;
                let r = r.strip_prefix("+OK\r\n").unwrap_or(&r).to_string();
                // The second reply may come in a read of its own.
                if r.is_empty() { None } else { Some(r) }
            }
        }
    }

    fn wait(&self, what: &str, ok: impl Fn(&Sentinels) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ok(self) {
            assert!(Instant::now() < deadline, "sentinel set: never had {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The port the first sentinel names as master.
    pub fn master_port(&self) -> Option<u16> {
        let r = self.ask(
            self.ports[0],
            &format!("SENTINEL GET-MASTER-ADDR-BY-NAME {MASTER}"),
        )?;
        r.lines()
            .filter(|l| !l.starts_with(['*', '$']))
            .nth(1)?
            .parse()
            .ok()
    }

    /// Kills the master (SIGKILL) and returns when the sentinels name the replica instead and
    /// it answers as a master (bounded, 30 s).
    pub fn fail_over(&mut self) -> Duration {
        let t = Instant::now();
        self.master.stop();
        let replica = self.replica.port;
        self.wait("the replica promoted", |s| {
            s.master_port() == Some(replica)
                && s.ask(s.replica.port, "ROLE")
                    .is_some_and(|r| r.contains("master"))
        });
        t.elapsed()
    }
}

impl Topology for Sentinels {
    fn keys(&self) -> Vec<(String, String)> {
        let list: Vec<String> = match &self.password {
            None => self
                .ports
                .iter()
                .map(|p| format!("127.0.0.1:{p}"))
                .collect(),
            Some(pw) => self
                .ports
                .iter()
                .map(|p| format!("redis://:{pw}@127.0.0.1:{p}"))
                .collect(),
        };
        vec![
            ("redis_sentinels".into(), list.join(",")),
            ("redis_sentinel_master".into(), MASTER.into()),
        ]
    }
}
