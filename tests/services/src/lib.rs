//! Real servers for the scale-out tests: `redis-server`, PostgreSQL and moto
//! (an S3-protocol server), each started on a free loopback port in a
//! scratch directory of its own. `scripts/test-services` installs them; a
//! missing one fails the test that needs it (tests never skip).
//!
//! Every server is tied to the test process: it gets `SIGKILL` when the
//! process exits, however it exits (`PR_SET_PDEATHSIG`, armed from a thread
//! that lives as long as the server), and scratch directories that a dead
//! test process left behind are removed by the next start.

#![allow(
    clippy::unwrap_used,
    reason = "test support: a failure to start a server is a failed test"
)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a server may take to answer after it is started.
const STARTUP: Duration = Duration::from_secs(60);

/// One redis-server.
pub struct Redis {
    process: Option<Process>,
    dir: ScratchDir,
    port: u16,
    durable: bool,
}

impl Redis {
    /// A server that keeps nothing on disk.
    pub fn start() -> Redis {
        Redis::launch(false)
    }

    /// A server with an append-only file fsynced before every reply, as the
    /// cluster docs recommend: a write it acknowledged survives `SIGKILL`.
    pub fn start_durable() -> Redis {
        Redis::launch(true)
    }

    fn launch(durable: bool) -> Redis {
        let dir = ScratchDir::new("redis");
        let mut redis = Redis {
            process: None,
            port: 0,
            dir,
            durable,
        };
        redis.port = retry_on_port_clash(|port| {
            redis.port = port;
            redis.spawn()
        });
        redis
    }

    fn spawn(&mut self) -> Result<(), String> {
        let binary = std::env::var("SWITCHYARD_TEST_REDIS_SERVER")
            .unwrap_or_else(|_| "redis-server".to_owned());
        let mut command = Command::new(&binary);
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--dir"])
            .arg(self.dir.path())
            .args(["--daemonize", "no", "--protected-mode", "no"]);
        if self.durable {
            command.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            command.args(["--appendonly", "no"]);
        }
        let process = Process::spawn(command, &self.dir.path().join("redis.log"), &binary)?;
        let port = self.port;
        process.wait_until("redis-server", || redis_ping(port))?;
        self.process = Some(process);
        Ok(())
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server with `SIGKILL` and waits until it is gone.
    pub fn kill(&mut self) {
        if let Some(process) = self.process.take() {
            process.kill();
        }
    }

    /// Starts it again on the same port with the same files.
    pub fn restart(&mut self) {
        self.kill();
        // The port may linger for a moment after the kill.
        respawn("redis-server", || self.spawn());
    }

    /// Runs one command (inline protocol) and returns the raw reply.
    pub fn command(&self, line: &str) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream.set_read_timeout(Some(STARTUP)).unwrap();
        stream.write_all(format!("{line}\r\n").as_bytes()).unwrap();
        let mut reply = [0u8; 4096];
        let n = stream.read(&mut reply).unwrap();
        String::from_utf8_lossy(&reply[..n]).into_owned()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn redis_ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 64];
    matches!(stream.read(&mut reply), Ok(n) if reply[..n].starts_with(b"+PONG"))
}

/// One redis-server per test process, shared by its tests (each uses keys
/// of its own).
pub fn shared_redis() -> &'static Redis {
    static REDIS: OnceLock<Redis> = OnceLock::new();
    REDIS.get_or_init(Redis::start)
}

/// One PostgreSQL server (a fresh cluster, `trust` auth on loopback).
pub struct Postgres {
    process: Option<Process>,
    dir: ScratchDir,
    port: u16,
    durable: bool,
}

impl Postgres {
    /// initdb and start, committing without waiting for the WAL to be
    /// written: fast, and a server killed loses its last commits.
    pub fn start() -> Postgres {
        Postgres::launch(false)
    }

    /// A server whose commits are in its WAL before they are acknowledged
    /// (`synchronous_commit = on`), so they survive `SIGKILL` (not a power
    /// failure: it still does not fsync).
    pub fn start_durable() -> Postgres {
        Postgres::launch(true)
    }

    fn launch(durable: bool) -> Postgres {
        let bin = postgres_bin();
        let dir = ScratchDir::new("postgres");
        let data = dir.path().join("data");
        let owner = server_user();
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"])
            .args(["--no-instructions", "--locale=C.UTF-8"])
            .stdout(Stdio::null());
        as_server_user(&mut initdb, owner);
        let out = initdb.output().unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e}; run scripts/test-services",
                bin.display()
            )
        });
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut postgres = Postgres {
            process: None,
            dir,
            port: 0,
            durable,
        };
        postgres.port = retry_on_port_clash(|port| {
            postgres.port = port;
            postgres.spawn()
        });
        postgres
    }

    fn spawn(&mut self) -> Result<(), String> {
        let bin = postgres_bin();
        let port = self.port;
        let mut command = Command::new(bin.join("postgres"));
        command
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-p", &port.to_string(), "-k"])
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "full_page_writes=off"])
            .args(["-c", "max_connections=300", "-c", "shared_buffers=32MB"]);
        let synchronous_commit = if self.durable { "on" } else { "off" };
        command.args(["-c", &format!("synchronous_commit={synchronous_commit}")]);
        as_server_user(&mut command, server_user());
        let log = self.dir.path().join("postgres.log");
        let started = Process::spawn(command, &log, "postgres")?;
        let ready = bin.join("pg_isready");
        started.wait_until("postgres", || {
            Command::new(&ready)
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                .status()
                .is_ok_and(|s| s.success())
        })?;
        self.process = Some(started);
        Ok(())
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Kills the server (the postmaster, with `SIGKILL`) and waits until
    /// it is gone; its backends exit when they notice.
    pub fn kill(&mut self) {
        if let Some(process) = self.process.take() {
            process.kill();
        }
    }

    /// Starts it again on the same port with the same files (crash
    /// recovery included).
    pub fn restart(&mut self) {
        self.kill();
        // The port and the shared memory of the killed server's backends
        // may linger for a moment.
        respawn("postgres", || self.spawn());
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(process) = self.process.take() {
            process.kill();
        }
    }
}

/// One PostgreSQL per test process, shared by its tests (each uses schemas
/// of its own).
pub fn shared_postgres() -> &'static Postgres {
    static POSTGRES: OnceLock<Postgres> = OnceLock::new();
    POSTGRES.get_or_init(Postgres::start)
}

/// The newest installed PostgreSQL's `bin` directory.
fn postgres_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("SWITCHYARD_TEST_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .expect("PostgreSQL is not installed: run scripts/test-services")
}

/// PostgreSQL refuses to run as root: when we are root, its uid and gid.
fn server_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let line = passwd
        .lines()
        .find(|l| l.starts_with("postgres:"))
        .expect("running as root needs a `postgres` user: run scripts/test-services");
    let fields: Vec<&str> = line.split(':').collect();
    Some((fields[2].parse().unwrap(), fields[3].parse().unwrap()))
}

fn as_server_user(command: &mut Command, owner: Option<(u32, u32)>) {
    if let Some((uid, gid)) = owner {
        command.uid(uid).gid(gid).env("HOME", "/tmp");
    }
}

/// One moto server: an S3-protocol endpoint (any credentials work).
pub struct S3 {
    process: Option<Process>,
    _dir: ScratchDir,
    port: u16,
}

impl S3 {
    /// Starts moto.
    pub fn start() -> S3 {
        let binary = std::env::var("SWITCHYARD_TEST_MOTO_SERVER").map_or_else(
            |_| {
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../../target/test-tools/moto/bin/moto_server")
            },
            PathBuf::from,
        );
        assert!(
            binary.is_file(),
            "{} is missing: run scripts/test-services",
            binary.display()
        );
        let dir = ScratchDir::new("s3");
        let log = dir.path().join("moto.log");
        let mut process = None;
        let port = retry_on_port_clash(|port| {
            let mut command = Command::new(&binary);
            command.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
            let started = Process::spawn(command, &log, "moto_server")?;
            started.wait_until("moto_server", || {
                http(port, "GET", "/").is_some_and(|status| status > 0)
            })?;
            process = Some(started);
            Ok(())
        });
        S3 {
            process,
            _dir: dir,
            port,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket (idempotent).
    pub fn create_bucket(&self, name: &str) {
        let status = http(self.port, "PUT", &format!("/{name}"));
        assert_eq!(status, Some(200), "creating bucket {name}");
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        if let Some(process) = self.process.take() {
            process.kill();
        }
    }
}

/// One S3 server per test process.
pub fn shared_s3() -> &'static S3 {
    static S3_SERVER: OnceLock<S3> = OnceLock::new();
    S3_SERVER.get_or_init(S3::start)
}

/// The status of a bodyless HTTP/1.1 request, if one came back.
fn http(port: u16, method: &str, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).ok()?;
    let line = std::str::from_utf8(&head[..n]).ok()?;
    line.split(' ').nth(1)?.parse().ok()
}

/// A started server, and the thread that waits for it.
struct Process {
    pid: i32,
    exited: Mutex<mpsc::Receiver<()>>,
    log: PathBuf,
}

impl Process {
    /// Starts `command` with its output in `log`, killed when the test
    /// process exits.
    fn spawn(mut command: Command, log: &Path, what: &str) -> Result<Process, String> {
        let out = std::fs::File::create(log).map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        // SAFETY: prctl is async-signal-safe and touches only this child.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let (started_tx, started) = mpsc::channel();
        let (exited_tx, exited) = mpsc::channel();
        // The death signal follows the thread that spawned the child, so
        // that thread lives exactly as long as the child.
        std::thread::spawn(move || match command.spawn() {
            Ok(mut child) => {
                let _ = started_tx.send(Ok(child.id()));
                let _ = child.wait();
                let _ = exited_tx.send(());
            }
            Err(e) => {
                let _ = started_tx.send(Err(e));
            }
        });
        let pid = started
            .recv()
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot start {what}: {e}; run scripts/test-services"))?;
        Ok(Process {
            pid: i32::try_from(pid).map_err(|e| e.to_string())?,
            exited: Mutex::new(exited),
            log: log.to_owned(),
        })
    }

    /// Polls `ready` until it holds; fails if the process exits first or
    /// the startup time runs out.
    fn wait_until(&self, what: &str, mut ready: impl FnMut() -> bool) -> Result<(), String> {
        let deadline = Instant::now() + STARTUP;
        loop {
            if ready() {
                return Ok(());
            }
            if self.exited().try_recv().is_ok() {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                return Err(format!("{what} exited at startup:\n{log}"));
            }
            if Instant::now() > deadline {
                self.signal(libc::SIGKILL);
                return Err(format!("{what} did not become ready within {STARTUP:?}"));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn exited(&self) -> std::sync::MutexGuard<'_, mpsc::Receiver<()>> {
        self.exited
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our
        // child's, which the waiting thread has not reaped yet.
        unsafe {
            libc::kill(self.pid, signal);
        }
    }

    /// `SIGKILL`, then waits until the child is reaped.
    fn kill(self) {
        self.signal(libc::SIGKILL);
        let _ = self.exited().recv_timeout(STARTUP);
    }
}

/// Runs `spawn` until it succeeds, for up to the startup time: a server
/// just killed may still hold what its successor needs.
fn respawn(what: &str, mut spawn: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + STARTUP;
    loop {
        match spawn() {
            Ok(()) => return,
            Err(e) if Instant::now() < deadline => {
                eprintln!("restarting {what}: {e}; retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("cannot restart {what}: {e}"),
        }
    }
}

/// Finds a free port, then runs `start` on it, retrying on another port
/// if the start fails (another process may take the port in between).
fn retry_on_port_clash(mut start: impl FnMut(u16) -> Result<(), String>) -> u16 {
    let mut last = String::new();
    for _ in 0..5 {
        let port = free_port();
        match start(port) {
            Ok(()) => return port,
            Err(e) => last = e,
        }
    }
    panic!("{last}");
}

fn free_port() -> u16 {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    listener.local_addr().unwrap().port()
}

/// `<tmp>/switchyard-test-services/<pid>-<name>-<n>`, removed on drop;
/// the directories of test processes that are gone are removed on creation.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(name: &str) -> ScratchDir {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let root = std::env::temp_dir().join("switchyard-test-services");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&root)
            .unwrap();
        // Servers that drop privileges must reach their directory.
        let _ = std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755));
        remove_orphans(&root);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = root.join(format!("{}-{name}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::DirBuilder::new().mode(0o755).create(&dir).unwrap();
        ScratchDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn remove_orphans(root: &Path) {
    for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.split('-').next())
            .and_then(|pid| pid.parse::<i32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
