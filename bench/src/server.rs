//! A server under test: a child process pinned to one CPU, its output in a
//! log file, stopped (SIGTERM, then SIGKILL) when dropped.

use crate::http::{self, Request};
use anyhow::{Context, bail};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The CPU servers run on; the load generator gets the other one.
pub const SERVER_CPU: &str = "0";
/// The CPU the load generator runs on.
pub const CLIENT_CPU: &str = "1";

pub struct Server {
    pub name: String,
    child: Child,
}

impl Server {
    /// Starts `program args…` on [`SERVER_CPU`], appending its output to
    /// `log`.
    pub fn start(
        name: &str,
        program: &Path,
        args: &[&str],
        env: &[(&str, String)],
        log: &Path,
    ) -> anyhow::Result<Self> {
        let output = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open {}", log.display()))?;
        let mut command = Command::new("taskset");
        command
            .args(["-c", SERVER_CPU])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        Ok(Server {
            name: name.to_owned(),
            child,
        })
    }

    /// Waits until `GET path` with `host` answers 200, polling every
    /// 200 µs; returns how long that took from `since`.
    pub fn wait_ok(
        &mut self,
        addr: SocketAddr,
        host: &str,
        path: &str,
        since: Instant,
    ) -> anyhow::Result<Duration> {
        let deadline = since + Duration::from_secs(60);
        loop {
            if let Ok(response) = http::once(addr, &Request::get(host, path))
                && response.status == 200
            {
                return Ok(since.elapsed());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited with {status} before answering", self.name);
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not answer 200 on {addr}{path} within 60 s",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The resident set size of the server process, in bytes.
    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmRSS in /proc status")?;
        Ok(kib * 1024)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // taskset execs the server, so the child is the server itself.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: signalling a child process this struct owns.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback address with a port nobody listens on now.
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}
