//! Density: many projects on one node, many distinct components among
//! them; the node's memory, then requests spread at random over all of
//! them.

use crate::http::{Connection, Request};
use crate::switchyard::{Node, NodeConfig, bundle, variant};
use crate::wrk::{self, Load, Run};
use crate::{Plan, Tools};
use anyhow::{Context, bail};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub struct Density {
    pub projects: usize,
    pub components: usize,
    pub deploy_time: Duration,
    pub rss_after_deploys: u64,
    /// The first request to each project, one after another.
    pub first_requests: crate::cold_start::Timing,
    pub first_requests_p99: Duration,
    pub rss_after_first_requests: u64,
    /// Requests at random over all projects.
    pub random: Run,
    pub rss_after_load: u64,
}

/// Deploy threads: the node compiles on its own threads meanwhile.
const DEPLOYERS: usize = 4;

pub fn project_name(i: usize) -> String {
    format!("t{i:05}")
}

pub fn run(tools: &Tools, plan: &Plan, dir: &Path) -> anyhow::Result<Density> {
    let (projects, components) = (plan.density_projects, plan.density_components.max(1));
    let node = Node::start(&NodeConfig {
        binary: &tools.switchyard,
        data_dir: dir.join("switchyard-density"),
        log: dir.join("density.log"),
        settings: vec![(
            "SWITCHYARD__RUNTIME__APP_CACHE_CAPACITY",
            projects.max(1).to_string(),
        )],
    })?;
    let hello = std::fs::read(&tools.component)?;

    let started = Instant::now();
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let workers: Vec<_> = (0..DEPLOYERS)
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<()> {
                    let mut admin = node.admin()?;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= projects {
                            return Ok(());
                        }
                        let name = project_name(i);
                        let component = variant(&hello, i % components);
                        admin.create_project(&name)?;
                        admin.deploy(&name, &bundle(&name, Some(&component), &[])?)?;
                        if (i + 1).is_multiple_of(500) {
                            eprintln!("  {} projects deployed", i + 1);
                        }
                    }
                })
            })
            .collect();
        for worker in workers {
            worker
                .join()
                .map_err(|_| anyhow::anyhow!("a deploy thread panicked"))??;
        }
        Ok(())
    })?;
    let deploy_time = started.elapsed();
    let rss_after_deploys = node.server.rss_bytes()?;

    let mut connection = Connection::open(node.public)?;
    let mut firsts = Vec::with_capacity(projects);
    for i in 0..projects {
        let host = format!("{}.localhost", project_name(i));
        let started = Instant::now();
        let response = connection.send(&Request::get(&host, "/"))?;
        firsts.push(started.elapsed());
        if response.status != 200 {
            bail!("{host} answered {}", response.status);
        }
    }
    firsts.sort();
    let first_requests_p99 = firsts
        .get(firsts.len() * 99 / 100)
        .copied()
        .unwrap_or_default();
    let first_requests = crate::cold_start::Timing::of(firsts);
    let rss_after_first_requests = node.server.rss_bytes()?;

    let script = dir.join("random-tenant.lua");
    std::fs::write(
        &script,
        format!(
            "math.randomseed(7)\n\
             request = function()\n\
             \x20 local host = string.format(\"t%05d.localhost\", math.random(0, {}))\n\
             \x20 return wrk.format(\"GET\", \"/\", {{[\"Host\"] = host}})\n\
             end\n",
            projects.saturating_sub(1)
        ),
    )
    .context("cannot write the wrk script")?;
    let load = |duration| Load {
        addr: node.public,
        host: "t00000.localhost",
        path: "/",
        connections: plan.connections,
        duration,
        script: Some(&script),
    };
    wrk::run(&load(plan.warm_up))?;
    let runs = (0..plan.runs)
        .map(|_| wrk::run(&load(plan.duration)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Density {
        projects,
        components,
        deploy_time,
        rss_after_deploys,
        first_requests,
        first_requests_p99,
        rss_after_first_requests,
        random: wrk::median(&runs),
        rss_after_load: node.server.rss_bytes()?,
    })
}
