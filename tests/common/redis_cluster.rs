//! A Redis Cluster on loopback: three masters (and, if asked, one replica each) as real
//! redis-server processes joined by `redis-cli --cluster create`, with a 1 s node timeout so a
//! killed master's replica takes its slots within a few seconds. Everything is stopped however
//! the test ends.

use std::time::{Duration, Instant};

use super::redis::{Outage, Redis, Topology};
use super::{Proc, TempDir, free_port, program};

/// Three masters and their replicas, if any.
pub struct RedisCluster {
    /// The servers created as masters, in order; after a failover [`RedisCluster::master_ports`]
    /// says who is master now.
    pub masters: Vec<Redis>,
    /// The servers created as replicas (none from [`RedisCluster::start`]).
    pub replicas: Vec<Redis>,
    /// Ports of the servers [`RedisCluster::kill_master`] killed.
    killed: Vec<u16>,
}

/// One line of `CLUSTER NODES`.
struct Node {
    id: String,
    port: u16,
    master: bool,
    failed: bool,
    /// The id of the master it replicates, for a replica.
    of: Option<String>,
    /// Slot ranges served, inclusive.
    slots: Vec<(u16, u16)>,
}

/// A cluster-enabled server.
fn server() -> Redis {
    let bus = free_port().to_string();
    Redis::start_with(&[
        "--cluster-enabled",
        "yes",
        // Relative to the server's own `--dir`, so no two servers share one.
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        "1000",
        // The default bus port is port + 10000: past 65535 for a free port above 55535, which
        // redis-server refuses.
        "--cluster-port",
        &bus,
        // A replica's first sync starts at once instead of 5 s later.
        "--repl-diskless-sync-delay",
        "0",
    ])
}

impl RedisCluster {
    /// Three masters, no replicas, once every server sees all 16384 slots served.
    pub fn start() -> RedisCluster {
        RedisCluster::start_n(false)
    }

    /// Three masters with one replica each, once the slots are served and every replica is in
    /// sync (so it can be promoted).
    pub fn start_with_replicas() -> RedisCluster {
        RedisCluster::start_n(true)
    }

    fn start_n(replicas: bool) -> RedisCluster {
        let c = RedisCluster {
            masters: (0..3).map(|_| server()).collect(),
            replicas: (0..if replicas { 3 } else { 0 })
                .map(|_| server())
                .collect(),
            killed: Vec::new(),
        };
        c.create(replicas);
        let n = c.live().count();
        c.wait(Duration::from_secs(15), "every slot served", |c| {
            c.live().all(|p| cluster_ok(p, Some(n)))
        });
        c.wait(Duration::from_secs(15), "every replica in sync", |c| {
            c.masters.iter().all(|m| {
                let want = if replicas { "1" } else { "0" };
                info_field(m.port, "replication", "connected_slaves").as_deref() == Some(want)
            }) && c.replicas.iter().all(|r| {
                info_field(r.port, "replication", "master_link_status").as_deref() == Some("up")
            })
        });
        c
    }

    /// `redis-cli --cluster create` over every server, masters first (redis-cli makes the
    /// first three masters and pairs the rest with them as it likes), bounded at 20 s.
    fn create(&self, replicas: bool) {
        let cli = program("redis-cli", &["/usr/bin/redis-cli"]).expect(
            "redis-cli not found: run scripts/install-test-deps.sh (Debian package `redis-tools`)",
        );
        let dir = TempDir::new("redis-cluster");
        let log = dir.join("create.log");
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = std::process::Command::new(cli);
        cmd.args(["--cluster", "create"]);
        cmd.args(self.all().map(|r| format!("127.0.0.1:{}", r.port)));
        if replicas {
            cmd.args(["--cluster-replicas", "1"]);
        }
        // Without it redis-cli asks on stdin, and on a closed one exits 0 having done nothing.
        cmd.arg("--cluster-yes")
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let mut p = Proc::spawn("redis-cli", &mut cmd);
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = p.exited() {
                break status;
            }
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(Instant::now() < deadline, "cluster create hung: {said}");
            std::thread::sleep(Duration::from_millis(50));
        };
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(status.success(), "cluster create failed ({status}): {said}");
    }

    fn all(&self) -> impl Iterator<Item = &Redis> {
        self.masters.iter().chain(&self.replicas)
    }

    /// Ports of the servers not killed.
    fn live(&self) -> impl Iterator<Item = u16> + '_ {
        self.all()
            .map(|r| r.port)
            .filter(|p| !self.killed.contains(p))
    }

    /// The reply of the first live server that answers `args`.
    fn ask(&self, args: &[&str]) -> String {
        self.live()
            .find_map(|p| request(p, args))
            .unwrap_or_else(|| panic!("no server of the cluster answers {args:?}"))
    }

    fn wait(&self, within: Duration, what: &str, ok: impl Fn(&RedisCluster) -> bool) {
        let deadline = Instant::now() + within;
        while !ok(self) {
            if Instant::now() >= deadline {
                let view = self.live().find_map(|p| request(p, &["CLUSTER", "NODES"]));
                let view = view.unwrap_or_default();
                panic!("redis cluster: never had {what} in {within:?}; nodes:\n{view}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The ports of the masters now, by the slots they serve (the first serves slot 0).
    pub fn master_ports(&self) -> Vec<u16> {
        let mut masters: Vec<Node> = nodes(&self.ask(&["CLUSTER", "NODES"]))
            .into_iter()
            .filter(|n| n.master && !n.failed)
            .collect();
        masters.sort_by_key(|n| n.slots.first().map_or(u16::MAX, |s| s.0));
        masters.iter().map(|n| n.port).collect()
    }

    /// The port of the master serving `slot` now, as a live server sees it.
    pub fn port_of_slot(&self, slot: u16) -> Option<u16> {
        nodes(&self.ask(&["CLUSTER", "NODES"]))
            .into_iter()
            .find(|n| n.master && !n.failed && n.slots.iter().any(|&(a, b)| a <= slot && slot <= b))
            .map(|n| n.port)
    }

    /// The slot of `key` (hash tags and all), as a live server computes it.
    pub fn slot_of(&self, key: &str) -> u16 {
        let r = self.ask(&["CLUSTER", "KEYSLOT", key]);
        r.parse()
            .unwrap_or_else(|_| panic!("CLUSTER KEYSLOT said {r:?}"))
    }

    /// Kills the master on `port` (SIGKILL) and returns when every survivor says
    /// `cluster_state:ok` with its slots served by its promoted replica (bounded, 20 s).
    pub fn kill_master(&mut self, port: u16) -> Duration {
        let view = nodes(&self.ask(&["CLUSTER", "NODES"]));
        let dead = view
            .iter()
            .find(|n| n.port == port && n.master && !n.failed)
            .unwrap_or_else(|| panic!("{port} is not a live master"));
        let heir = view
            .iter()
            .find(|n| n.of.as_deref() == Some(&dead.id))
            .map(|n| n.port)
            .expect("the master has no replica: start with start_with_replicas");
        let slots = dead.slots.clone();
        let t = Instant::now();
        self.all_mut()
            .find(|r| r.port == port)
            .expect("a server of this cluster")
            .stop();
        self.killed.push(port);
        self.wait(Duration::from_secs(20), "the replica promoted", |c| {
            c.live().all(|p| {
                cluster_ok(p, None)
                    && request(p, &["CLUSTER", "NODES"]).is_some_and(|r| {
                        nodes(&r).iter().any(|n| {
                            n.port == heir && n.master && slots.iter().all(|s| n.slots.contains(s))
                        })
                    })
            })
        });
        t.elapsed()
    }

    /// Moves `slot` and its keys to another master, the way a resharding does (`SETSLOT
    /// IMPORTING` / `MIGRATING`, `MIGRATE` of its keys, `SETSLOT NODE` on every master), and
    /// waits (bounded) until every master names the new owner. Returns the new owner's port.
    pub fn move_slot(&self, slot: u16) -> u16 {
        let all = nodes(&self.ask(&["CLUSTER", "NODES"]));
        let owns = |n: &&Node| n.slots.iter().any(|&(a, b)| a <= slot && slot <= b);
        let from = all
            .iter()
            .find(|n| n.master && owns(n))
            .expect("slot owner");
        let to = all
            .iter()
            .find(|n| n.master && !n.failed && n.id != from.id)
            .expect("another master");
        let s = slot.to_string();
        let ok = |port: u16, args: &[&str]| {
            let r = request(port, args);
            assert!(r.is_some(), "{args:?} on {port} failed");
        };
        ok(to.port, &["CLUSTER", "SETSLOT", &s, "IMPORTING", &from.id]);
        ok(from.port, &["CLUSTER", "SETSLOT", &s, "MIGRATING", &to.id]);
        let cli = program("redis-cli", &["/usr/bin/redis-cli"]).expect("redis-cli");
        for _ in 0..100 {
            let out = std::process::Command::new(&cli)
                .args([
                    "-p",
                    &from.port.to_string(),
                    "--raw",
                    "CLUSTER",
                    "GETKEYSINSLOT",
                    &s,
                    "100",
                ])
                .output()
                .expect("redis-cli runs");
            let keys: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect();
            if keys.is_empty() {
                break;
            }
            let port = to.port.to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            args.extend(keys.iter().map(String::as_str));
            ok(from.port, &args);
        }
        ok(to.port, &["CLUSTER", "SETSLOT", &s, "NODE", &to.id]);
        ok(from.port, &["CLUSTER", "SETSLOT", &s, "NODE", &to.id]);
        let masters: Vec<u16> = all
            .iter()
            .filter(|n| n.master && !n.failed)
            .map(|n| n.port)
            .collect();
        for port in &masters {
            let _ = request(*port, &["CLUSTER", "SETSLOT", &s, "NODE", &to.id]);
        }
        self.wait(
            Duration::from_secs(15),
            "the slot's new owner everywhere",
            |_| {
                masters.iter().all(|p| {
                    request(*p, &["CLUSTER", "NODES"]).is_some_and(|r| {
                        nodes(&r).iter().any(|n| {
                            n.id == to.id && n.slots.iter().any(|&(a, b)| a <= slot && slot <= b)
                        })
                    })
                })
            },
        );
        to.port
    }

    fn all_mut(&mut self) -> impl Iterator<Item = &mut Redis> {
        self.masters.iter_mut().chain(&mut self.replicas)
    }

    /// Per-command call counts of the server on `port` (`INFO commandstats`), e.g.
    /// `("publish", 12)`; subcommands are named like `cluster|info`.
    pub fn commandstats(port: u16) -> Vec<(String, u64)> {
        let info = request(port, &["INFO", "commandstats"])
            .unwrap_or_else(|| panic!("no INFO commandstats from {port}"));
        info.lines()
            .filter_map(|l| {
                let (name, stats) = l.trim_end().strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = stats.split(',').find_map(|f| f.strip_prefix("calls="))?;
                Some((name.to_string(), calls.parse().ok()?))
            })
            .collect()
    }

    /// CPU seconds the server on `port` has used, system and user.
    pub fn used_cpu(port: u16) -> f64 {
        ["used_cpu_sys", "used_cpu_user"]
            .iter()
            .map(|f| {
                info_field(port, "cpu", f)
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or_else(|| panic!("no {f} from {port}"))
            })
            .sum()
    }

    /// Zeroes the counters of every live server (`CONFIG RESETSTAT`), replicas too.
    pub fn reset_stats(&self) {
        for p in self.live() {
            assert_eq!(
                request(p, &["CONFIG", "RESETSTAT"]).as_deref(),
                Some("OK"),
                "CONFIG RESETSTAT on {p}"
            );
        }
    }
}

impl Topology for RedisCluster {
    fn keys(&self) -> Vec<(String, String)> {
        let list: Vec<String> = self
            .masters
            .iter()
            .map(|r| format!("127.0.0.1:{}", r.port))
            .collect();
        vec![("redis_cluster_nodes".into(), list.join(","))]
    }
}

/// True when the server on `port` says the cluster is ok with every slot served (and, if
/// given, knows `known` nodes).
fn cluster_ok(port: u16, known: Option<usize>) -> bool {
    let Some(info) = request(port, &["CLUSTER", "INFO"]) else {
        return false;
    };
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.trim_end().strip_prefix(name)?.strip_prefix(':'))
            .map(str::to_string)
    };
    field("cluster_state").as_deref() == Some("ok")
        && field("cluster_slots_ok").as_deref() == Some("16384")
        && known.is_none_or(|n| field("cluster_known_nodes") == Some(n.to_string()))
}

/// One field of `INFO section` from the server on `port`.
fn info_field(port: u16, section: &str, name: &str) -> Option<String> {
    let info = request(port, &["INFO", section])?;
    info.lines()
        .find_map(|l| l.trim_end().strip_prefix(name)?.strip_prefix(':'))
        .map(str::to_string)
}

/// The lines of a `CLUSTER NODES` reply (`id ip:port@bus flags master ping pong epoch link
/// slot...`); slots being migrated (`[...]`) are left out.
fn nodes(reply: &str) -> Vec<Node> {
    reply
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let addr = f.get(1)?.split('@').next()?;
            let flags: Vec<&str> = f.get(2)?.split(',').collect();
            Some(Node {
                id: f[0].to_string(),
                port: addr.rsplit(':').next()?.parse().ok()?,
                master: flags.contains(&"master"),
                failed: flags.iter().any(|x| x.starts_with("fail")),
                of: f.get(3).filter(|m| **m != "-").map(|m| m.to_string()),
                slots: f
                    .iter()
                    .skip(8)
                    .filter(|s| !s.starts_with('['))
                    .filter_map(|s| match s.split_once('-') {
                        Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                        None => s.parse().ok().map(|a| (a, a)),
                    })
                    .collect(),
            })
        })
        .collect()
}

/// Sends one command as a RESP array to the server on loopback `port` and reads its whole
/// reply, however many reads that takes (2 s a read, 1 MiB at most): a status or an integer
/// without its type byte, or a bulk string's content. None if unreachable, for an error, a nil
/// or an array.
pub fn request(port: u16, args: &[&str]) -> Option<String> {
    use std::io::{Read, Write};
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(req.as_bytes()).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            match head.as_bytes().first() {
                Some(b'+' | b':') => return Some(head[1..].to_string()),
                Some(b'$') => {
                    let len: usize = head[1..].parse().ok()?;
                    if buf.len() >= end + 2 + len + 2 {
                        let body = &buf[end + 2..end + 2 + len];
                        return Some(String::from_utf8_lossy(body).into_owned());
                    }
                }
                _ => return None,
            }
        }
        if buf.len() > 1 << 20 {
            return None;
        }
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The whole cluster killed, then started again: each server keeps its `nodes.conf` (so the
/// cluster forms again with the same slots) and nothing else.
impl Outage for RedisCluster {
    fn down(&mut self) {
        for r in self.masters.iter_mut().chain(self.replicas.iter_mut()) {
            r.stop();
        }
    }
    fn up(&mut self) {
        for r in self.masters.iter_mut().chain(self.replicas.iter_mut()) {
            r.restart();
        }
        let n = self.masters.len() + self.replicas.len();
        self.wait(
            Duration::from_secs(20),
            "the cluster back after an outage",
            |c| c.masters.iter().all(|r| cluster_ok(r.port, Some(n))),
        );
    }
}

/// Defines, for each named `async fn(&impl Topology)`, a test on one Redis (`one_redis::`) and
/// one on a Redis Cluster of three masters (`on_redis_cluster::`): one scenario, two topologies.
#[macro_export]
macro_rules! on_redis_and_cluster {
    ($($name:ident),* $(,)?) => {
        mod one_redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&$crate::common::redis::Redis::start()).await
                }
            )*
        }
        mod on_redis_cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&$crate::common::redis_cluster::RedisCluster::start()).await
                }
            )*
        }
    };
}
