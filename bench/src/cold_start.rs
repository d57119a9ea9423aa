//! Cold start: process start to first 200, each server started afresh
//! several times (a dynamic app with its compiled artifact already cached,
//! for `wasmtime serve` and Switchyard alike); and, on a running node, the
//! first request right after a deploy against warm ones.

use crate::compare::{start_nginx, static_files};
use crate::http::{Connection, Request};
use crate::server::{Server, free_addr};
use crate::switchyard::{Node, NodeConfig, bundle, variant};
use crate::{Plan, Tools};
use anyhow::bail;
use std::path::Path;
use std::time::{Duration, Instant};

/// Median and fastest of a set of timings.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub median: Duration,
    pub min: Duration,
}

impl Timing {
    pub fn of(mut samples: Vec<Duration>) -> Timing {
        samples.sort();
        Timing {
            median: samples.get(samples.len() / 2).copied().unwrap_or_default(),
            min: samples.first().copied().unwrap_or_default(),
        }
    }
}

pub struct ColdStart {
    /// (system, process start → first 200).
    pub starts: Vec<(&'static str, Timing)>,
    /// First request after a deploy of a new component.
    pub after_deploy: Timing,
    /// A warm request on the same connection.
    pub warm: Timing,
}

pub fn run(tools: &Tools, plan: &Plan, dir: &Path) -> anyhow::Result<ColdStart> {
    let log = dir.join("cold-start.log");
    let mut starts = Vec::new();
    let component = tools.component.display().to_string();

    starts.push((
        "raw hyper",
        repeat(plan, |_| {
            let addr = free_addr()?;
            let started = Instant::now();
            let mut server =
                Server::start("hyper", &tools.hyper_hello, &[&addr.to_string()], &[], &log)?;
            server.wait_ok(addr, "localhost", "/", started)
        })?,
    ));

    static_files(&dir.join("www"))?;
    starts.push((
        "nginx (1 KiB file)",
        repeat(plan, |_| {
            let started = Instant::now();
            let (mut server, addr) = start_nginx(tools, dir, &log)?;
            server.wait_ok(addr, "localhost", "/1k.bin", started)
        })?,
    ));

    // The first start compiles into wasmtime's cache; the timed ones load.
    let wasmtime = |_| {
        let addr = free_addr()?;
        let addr_arg = format!("--addr={addr}");
        let started = Instant::now();
        let mut server = Server::start(
            "wasmtime serve",
            &tools.wasmtime,
            &["serve", &addr_arg, "-Scli", &component],
            &[],
            &log,
        )?;
        server.wait_ok(addr, "localhost", "/", started)
    };
    wasmtime(0)?;
    starts.push(("`wasmtime serve` (cache warm)", repeat(plan, wasmtime)?));

    // A data directory with `hello` deployed: its artifact compiled.
    let config = NodeConfig {
        binary: &tools.switchyard,
        data_dir: dir.join("switchyard-cold"),
        log: log.clone(),
        settings: Vec::new(),
    };
    let hello = std::fs::read(&tools.component)?;
    {
        let node = Node::start(&config)?;
        let mut admin = node.admin()?;
        admin.create_project("hello")?;
        admin.deploy("hello", &bundle("hello", Some(&hello), &[])?)?;
    }
    starts.push((
        "Switchyard (artifact cached)",
        repeat(plan, |_| {
            let (public, admin) = (free_addr()?, free_addr()?);
            let (mut node, started) = Node::spawn(&config, public, admin)?;
            node.server.wait_ok(public, "hello.localhost", "/", started)
        })?,
    ));

    // A new component per deploy: compiled by the deploy, loaded by the
    // first request.
    let node = Node::start(&config)?;
    let mut admin = node.admin()?;
    let mut public = Connection::open(node.public)?;
    let get = Request::get("hello.localhost", "/");
    let (mut firsts, mut warm) = (Vec::new(), Vec::new());
    for i in 0..plan.cold_starts {
        admin.deploy("hello", &bundle("hello", Some(&variant(&hello, i)), &[])?)?;
        let started = Instant::now();
        let status = public.send(&get)?.status;
        firsts.push(started.elapsed());
        if status != 200 {
            bail!("the first request after a deploy answered {status}");
        }
        for _ in 0..20 {
            let started = Instant::now();
            public.send(&get)?;
            warm.push(started.elapsed());
        }
    }
    Ok(ColdStart {
        starts,
        after_deploy: Timing::of(firsts),
        warm: Timing::of(warm),
    })
}

fn repeat(
    plan: &Plan,
    mut once: impl FnMut(usize) -> anyhow::Result<Duration>,
) -> anyhow::Result<Timing> {
    let samples = (0..plan.cold_starts)
        .map(&mut once)
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Timing::of(samples))
}
