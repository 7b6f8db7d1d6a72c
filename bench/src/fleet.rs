//! The parent's side of the worker processes: spawning them (re-running this binary as the
//! hidden `tether-bench worker`), reading their event lines, drawing the progress line on
//! stderr, and moving them through their phases with `go` / `stop`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::proto::{Event, Report, WorkerSpec};

/// What one worker has said so far.
#[derive(Default)]
struct Seen {
    /// Latest progress (ok, failed, recv).
    progress: (u64, u64, u64),
    /// Phase reports by name.
    phases: Vec<(String, Report)>,
    /// Final report.
    done: Option<Report>,
    /// Stdout ended.
    gone: bool,
}

/// Running worker processes.
pub struct Fleet {
    /// The processes (killed on drop if still running).
    children: Vec<Child>,
    /// Their stdins, for commands.
    stdins: Vec<Option<ChildStdin>>,
    /// Events from the reader threads: (worker, event or None at end of stdout).
    rx: mpsc::Receiver<(usize, Option<Event>)>,
    /// Per-worker state.
    seen: Vec<Seen>,
    /// Scenario name for the progress line.
    label: String,
    /// No progress line.
    quiet: bool,
    /// Last progress draw.
    drawn: Instant,
    /// What the last draw showed (label, total).
    last: (String, u64),
    /// Stderr is a terminal: redraw the line in place.
    tty: bool,
}

impl Fleet {
    /// Starts one worker process per spec.
    pub fn spawn(specs: &[WorkerSpec], label: &str, quiet: bool) -> Result<Fleet, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find own binary: {e}"))?;
        let (tx, rx) = mpsc::channel();
        let mut fleet = Fleet {
            children: Vec::new(),
            stdins: Vec::new(),
            rx,
            seen: Vec::new(),
            label: label.to_string(),
            quiet,
            drawn: Instant::now(),
            last: (String::new(), 0),
            tty: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        };
        for (i, spec) in specs.iter().enumerate() {
            let json = serde_json::to_string(spec).map_err(|e| e.to_string())?;
            let mut child = Command::new(&exe)
                .args(["worker", "--spec", &json])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| format!("cannot start worker {i}: {e}"))?;
            let stdout = child.stdout.take().ok_or("worker stdout missing")?;
            fleet.stdins.push(child.stdin.take());
            fleet.children.push(child);
            fleet.seen.push(Seen::default());
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    match serde_json::from_str::<Event>(&line) {
                        Ok(ev) => {
                            if tx.send((i, Some(ev))).is_err() {
                                return;
                            }
                        }
                        Err(e) => log::warn!("worker {i}: unreadable line ({e}): {line}"),
                    }
                }
                let _ = tx.send((i, None));
            });
        }
        Ok(fleet)
    }

    /// Sends a command line to every worker still running.
    pub fn send(&mut self, cmd: &str) {
        for s in self.stdins.iter_mut().flatten() {
            let _ = writeln!(s, "{cmd}");
            let _ = s.flush();
        }
    }

    /// Sums of the workers' latest progress: (ok, failed, recv).
    pub fn totals(&self) -> (u64, u64, u64) {
        self.seen.iter().fold((0, 0, 0), |a, s| {
            (a.0 + s.progress.0, a.1 + s.progress.1, a.2 + s.progress.2)
        })
    }

    /// Takes events for up to `dur`, redrawing the progress line; Err on a worker's fatal error.
    pub fn pump(&mut self, dur: Duration, what: &str, total: u64) -> Result<(), String> {
        let until = Instant::now() + dur;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left.min(Duration::from_millis(100))) {
                Ok((i, Some(ev))) => self.take(i, ev)?,
                Ok((i, None)) => self.seen[i].gone = true,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return if self.seen.iter().all(|s| s.done.is_some()) {
                        Ok(())
                    } else {
                        Err("all workers ended".into())
                    };
                }
            }
            if self.drawn.elapsed() >= Duration::from_millis(200) {
                self.draw(what, total);
            }
            if Instant::now() >= until {
                return Ok(());
            }
        }
    }

    fn take(&mut self, i: usize, ev: Event) -> Result<(), String> {
        let s = &mut self.seen[i];
        match ev {
            Event::Progress { ok, failed, recv } => s.progress = (ok, failed, recv),
            Event::Phase { name, report } => {
                s.progress.0 = s.progress.0.max(report.established);
                s.phases.push((name, *report));
            }
            Event::Done { report } => s.done = Some(*report),
            Event::Fatal { message } => return Err(format!("worker {i}: {message}")),
        }
        Ok(())
    }

    /// Redraws the one-line progress indicator (only on a terminal; elsewhere the line is
    /// written once per phase, by [`Fleet::end_line`]).
    pub fn draw(&mut self, what: &str, total: u64) {
        self.drawn = Instant::now();
        self.last = (what.to_string(), total);
        if self.quiet || !self.tty {
            return;
        }
        let (ok, failed, recv) = self.totals();
        let width = 24usize;
        let filled = (ok.min(total) * width as u64)
            .checked_div(total)
            .unwrap_or(0) as usize;
        let bar = format!("{}{}", "#".repeat(filled), "-".repeat(width - filled));
        let mut line = format!(
            "\r[{}] {what:<14} [{bar}] {ok}/{total} ok, {failed} failed",
            self.label
        );
        if recv > 0 {
            line.push_str(&format!(", {recv} received"));
        }
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "{line:<90}");
        let _ = err.flush();
    }

    /// Ends the progress line (writes it once when stderr is not a terminal).
    pub fn end_line(&mut self) {
        if self.quiet {
            return;
        }
        if !self.tty {
            self.tty = true;
            let (what, total) = self.last.clone();
            self.draw(&what, total);
            self.tty = false;
        }
        eprintln!();
    }

    /// Waits until every worker reached phase `name` (or finished), up to `within`, showing
    /// `label` on the progress line; returns their reports for that phase.
    pub fn phase(
        &mut self,
        name: &str,
        label: &str,
        within: Duration,
        total: u64,
    ) -> Result<Vec<Report>, String> {
        let until = Instant::now() + within;
        loop {
            if let Some(reports) = self.reports(name) {
                self.draw(label, total);
                self.end_line();
                return Ok(reports);
            }
            let reached = |s: &Seen| s.done.is_some() || s.phases.iter().any(|(n, _)| n == name);
            if let Some(i) = self.seen.iter().position(|s| s.gone && !reached(s)) {
                return Err(format!("worker {i} ended before `{name}`"));
            }
            if Instant::now() >= until {
                return Err(format!("workers did not reach `{name}` in {within:?}"));
            }
            self.pump(Duration::from_millis(100), label, total)?;
        }
    }

    /// Every worker's report for phase `name` (a finished worker's final one), once all have
    /// reached it; None before. Does not wait.
    pub fn reports(&self, name: &str) -> Option<Vec<Report>> {
        let reached = |s: &Seen| s.done.is_some() || s.phases.iter().any(|(n, _)| n == name);
        if !self.seen.iter().all(reached) {
            return None;
        }
        Some(
            self.seen
                .iter()
                .map(|s| {
                    s.phases
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, r)| r.clone())
                        .or_else(|| s.done.clone())
                        .unwrap_or_default()
                })
                .collect(),
        )
    }

    /// Takes the events already waiting, without blocking or drawing: keeps a fleet that is
    /// not being watched current, and surfaces its fatal errors.
    pub fn drain(&mut self) -> Result<(), String> {
        // Bounded: workers write about five lines a second each, far fewer than this.
        for _ in 0..10_000 {
            match self.rx.try_recv() {
                Ok((i, Some(ev))) => self.take(i, ev)?,
                Ok((i, None)) => self.seen[i].gone = true,
                Err(_) => break,
            }
        }
        if let Some(i) = self.seen.iter().position(|s| s.gone && s.done.is_none()) {
            return Err(format!("worker {i} ended early"));
        }
        Ok(())
    }

    /// Collects every worker's final report, up to `within`; with `stop`, tells them to stop
    /// first (otherwise they finish by themselves).
    pub fn finish(&mut self, within: Duration, stop: bool) -> Result<Vec<Report>, String> {
        if stop {
            self.send("stop");
        }
        let until = Instant::now() + within;
        while self.seen.iter().any(|s| s.done.is_none()) {
            if let Some(i) = self.seen.iter().position(|s| s.gone && s.done.is_none()) {
                return Err(format!("worker {i} ended without a report"));
            }
            if Instant::now() >= until {
                return Err(format!("workers did not finish in {within:?}"));
            }
            let total = self.last.1;
            self.pump(Duration::from_millis(100), "finishing", total)?;
        }
        self.stdins.clear();
        for c in &mut self.children {
            let _ = c.wait();
        }
        Ok(self.seen.iter().filter_map(|s| s.done.clone()).collect())
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stdins.clear();
        for c in &mut self.children {
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
