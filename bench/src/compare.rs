//! The side-by-side comparison: each system alone on the server CPU, the
//! same wrk load against each, in one run.

use crate::http::{self, Request};
use crate::server::{Server, free_addr};
use crate::switchyard::{Node, NodeConfig, bundle};
use crate::wrk::{self, Load, Run};
use crate::{Plan, Tools};
use anyhow::{Context, bail};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Instant;

/// The static files both nginx and Switchyard serve.
pub const STATIC_FILES: [(&str, usize); 2] = [("1k.bin", 1024), ("100k.bin", 100 * 1024)];

/// One system's figures.
pub struct Row {
    pub name: String,
    pub run: Run,
}

/// Every system's figures, in the order measured.
pub struct Comparison {
    pub rows: Vec<Row>,
}

impl Comparison {
    pub fn get(&self, name: &str) -> Option<&Run> {
        self.rows.iter().find(|r| r.name == name).map(|r| &r.run)
    }
}

pub const HYPER: &str = "raw hyper, hello world";
pub const WASMTIME: &str = "`wasmtime serve`, hello (fresh instance per request)";
pub const WASMTIME_REUSE: &str = "`wasmtime serve --max-instance-reuse-count 128`, hello";
pub const SWITCHYARD: &str = "Switchyard, hello on a tenant hostname (fresh instance per request)";
pub const NGINX_1K: &str = "nginx, 1 KiB static file";
pub const SWITCHYARD_1K: &str = "Switchyard, 1 KiB static asset";
pub const NGINX_100K: &str = "nginx, 100 KiB static file";
pub const SWITCHYARD_100K: &str = "Switchyard, 100 KiB static asset";

pub fn run(tools: &Tools, plan: &Plan, dir: &Path) -> anyhow::Result<Comparison> {
    let log = dir.join("servers.log");
    let mut rows = Vec::new();
    let mut record = |name: &str, run: Run| {
        eprintln!(
            "  {name}: {:.0} requests/s, p50 {:?}, p99 {:?}",
            run.requests_per_second, run.p50, run.p99
        );
        rows.push(Row {
            name: name.to_owned(),
            run,
        });
    };

    let addr = free_addr()?;
    {
        let started = Instant::now();
        let mut hyper = Server::start(
            "hyper-hello",
            &tools.hyper_hello,
            &[&addr.to_string()],
            &[],
            &log,
        )?;
        hyper.wait_ok(addr, "localhost", "/", started)?;
        record(
            HYPER,
            measure(plan, addr, "localhost", "/", b"Hello from hyper!\n")?,
        );
    }

    let hello = b"Hello from Switchyard!\n";
    for (name, extra) in [
        (WASMTIME, None),
        (WASMTIME_REUSE, Some("--max-instance-reuse-count=128")),
    ] {
        let addr = free_addr()?;
        let addr_arg = format!("--addr={addr}");
        let component = tools.component.display().to_string();
        let mut args = vec!["serve", &addr_arg, "-Scli"];
        args.extend(extra);
        args.push(&component);
        let started = Instant::now();
        let mut wasmtime = Server::start("wasmtime serve", &tools.wasmtime, &args, &[], &log)?;
        wasmtime.wait_ok(addr, "localhost", "/", started)?;
        record(name, measure(plan, addr, "localhost", "/", hello)?);
    }

    let files = static_files(&dir.join("www"))?;
    {
        let (mut nginx, addr) = start_nginx(tools, dir, &log)?;
        nginx.wait_ok(addr, "localhost", "/1k.bin", Instant::now())?;
        for ((file, _), name) in STATIC_FILES.iter().zip([NGINX_1K, NGINX_100K]) {
            let path = format!("/{file}");
            let expected = files_content(&files, file)?;
            record(name, measure(plan, addr, "localhost", &path, expected)?);
        }
    }

    {
        let node = Node::start(&NodeConfig {
            binary: &tools.switchyard,
            data_dir: dir.join("switchyard-compare"),
            log: log.clone(),
            settings: Vec::new(),
        })?;
        let mut admin = node.admin()?;
        let component = std::fs::read(&tools.component)?;
        admin.create_project("hello")?;
        admin.deploy("hello", &bundle("hello", Some(&component), &[])?)?;
        let assets: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (*n, b.as_slice())).collect();
        admin.create_project("static")?;
        admin.deploy("static", &bundle("static", None, &assets)?)?;
        record(
            SWITCHYARD,
            measure(plan, node.public, "hello.localhost", "/", hello)?,
        );
        for ((file, _), name) in STATIC_FILES.iter().zip([SWITCHYARD_1K, SWITCHYARD_100K]) {
            let path = format!("/{file}");
            let expected = files_content(&files, file)?;
            record(
                name,
                measure(plan, node.public, "static.localhost", &path, expected)?,
            );
        }
    }
    Ok(Comparison { rows })
}

/// Checks the answer, warms up, then returns the median of the runs.
fn measure(
    plan: &Plan,
    addr: SocketAddr,
    host: &str,
    path: &str,
    expected: &[u8],
) -> anyhow::Result<Run> {
    let answer = http::once(addr, &Request::get(host, path))?;
    if answer.status != 200 || answer.body != expected {
        bail!(
            "http://{host}{path} answered {} with {} bytes, not the expected {} bytes",
            answer.status,
            answer.body.len(),
            expected.len()
        );
    }
    let load = |duration| Load {
        addr,
        host,
        path,
        connections: plan.connections,
        duration,
        script: None,
    };
    wrk::run(&load(plan.warm_up))?;
    let runs = (0..plan.runs)
        .map(|_| wrk::run(&load(plan.duration)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(wrk::median(&runs))
}

/// Writes the static files (bytes that do not compress) into `www`.
pub fn static_files(www: &Path) -> anyhow::Result<Vec<(&'static str, Vec<u8>)>> {
    std::fs::create_dir_all(www)?;
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut files = Vec::new();
    for (name, size) in STATIC_FILES {
        let bytes: Vec<u8> = (0..size)
            .map(|_| {
                // xorshift: cheap, fixed, incompressible enough.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()[0]
            })
            .collect();
        std::fs::write(www.join(name), &bytes)?;
        files.push((name, bytes));
    }
    Ok(files)
}

fn files_content<'a>(files: &'a [(&str, Vec<u8>)], name: &str) -> anyhow::Result<&'a [u8]> {
    files
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, b)| b.as_slice())
        .context("no such static file")
}

/// nginx as a static file server should be set up for speed: one worker,
/// sendfile, no access log, keep-alive without a request cap.
pub fn start_nginx(tools: &Tools, dir: &Path, log: &Path) -> anyhow::Result<(Server, SocketAddr)> {
    let addr = free_addr()?;
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(&prefix)?;
    let p = prefix.display();
    let www = dir.join("www");
    let config = format!(
        "daemon off;
master_process on;
worker_processes 1;
user root;
pid {p}/nginx.pid;
error_log {p}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    default_type application/octet-stream;
    client_body_temp_path {p}/body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    server {{
        listen {addr};
        root {www};
    }}
}}
",
        www = www.display()
    );
    let config_path = prefix.join("nginx.conf");
    std::fs::write(&config_path, config)?;
    let prefix_arg = format!("{}/", prefix.display());
    let config_arg = config_path.display().to_string();
    let server = Server::start(
        "nginx",
        &tools.nginx,
        &["-p", &prefix_arg, "-c", &config_arg],
        &[],
        log,
    )?;
    Ok((server, addr))
}
