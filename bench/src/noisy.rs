//! Noisy neighbour, CPU: tenant B's latency alone, then while tenant A
//! keeps its whole concurrency busy with guests that never stop computing
//! (each ended by its wall-clock limit). Both on one node pinned to the
//! server CPU; both loads from the client CPU.

use crate::server::CLIENT_CPU;
use crate::switchyard::{Node, NodeConfig, bundle_with};
use crate::wrk::{self, Load, Run};
use crate::{Plan, Tools};
use anyhow::Context;
use std::path::Path;
use std::process::{Command, Stdio};

/// A's limits: at most this many requests at once, each cut off after
/// `A_WALL_CLOCK_MS`.
pub const A_CONCURRENCY: u32 = 4;
pub const A_WALL_CLOCK_MS: u32 = 1000;
/// Connections B's load uses: a latency test, not a saturation one.
pub const B_CONNECTIONS: u32 = 8;
/// Connections driving A: one per request it may run, so it is always
/// full without a flood of `CAPACITY` refusals measuring something else.
const A_CONNECTIONS: u32 = A_CONCURRENCY;

/// The settings measured: the epoch tick (how often a spinning guest
/// yields its thread) and `background_after_ms` (0: no background lane).
pub const SETTINGS: [Setting; 4] = [
    Setting {
        epoch_tick_ms: 10,
        background_after_ms: 0,
    },
    Setting {
        epoch_tick_ms: 1,
        background_after_ms: 0,
    },
    Setting {
        epoch_tick_ms: 10,
        background_after_ms: 2,
    },
    Setting {
        epoch_tick_ms: 1,
        background_after_ms: 2,
    },
];

#[derive(Clone, Copy, Debug)]
pub struct Setting {
    pub epoch_tick_ms: u64,
    pub background_after_ms: u64,
}

pub struct Noisy {
    pub setting: Setting,
    pub solo: Run,
    pub with_neighbour: Run,
}

/// Measures B alone and beside A under each of [`SETTINGS`].
pub fn run(tools: &Tools, plan: &Plan, dir: &Path) -> anyhow::Result<Vec<Noisy>> {
    SETTINGS
        .iter()
        .enumerate()
        .map(|(i, &setting)| run_with(tools, plan, &dir.join(format!("noisy-{i}")), setting))
        .collect()
}

fn run_with(tools: &Tools, plan: &Plan, dir: &Path, setting: Setting) -> anyhow::Result<Noisy> {
    std::fs::create_dir_all(dir)?;
    let node = Node::start(&NodeConfig {
        binary: &tools.switchyard,
        data_dir: dir.join("switchyard"),
        log: dir.join("switchyard.log"),
        settings: vec![
            (
                "SWITCHYARD__RUNTIME__EPOCH_TICK_MS",
                setting.epoch_tick_ms.to_string(),
            ),
            (
                "SWITCHYARD__RUNTIME__BACKGROUND_AFTER_MS",
                setting.background_after_ms.to_string(),
            ),
        ],
    })?;
    let mut admin = node.admin()?;
    let hello = std::fs::read(&tools.component)?;
    let hostile = std::fs::read(&tools.hostile)
        .with_context(|| format!("cannot read {}", tools.hostile.display()))?;
    admin.create_project("b")?;
    admin.deploy("b", &bundle_with("b", "", Some(&hello), &[])?)?;
    let limits =
        format!("[limits]\nconcurrency = {A_CONCURRENCY}\nwall_clock_ms = {A_WALL_CLOCK_MS}\n");
    admin.create_project("a")?;
    admin.deploy("a", &bundle_with("a", &limits, Some(&hostile), &[])?)?;

    let b = |duration| Load {
        addr: node.public,
        host: "b.localhost",
        path: "/",
        connections: B_CONNECTIONS,
        duration,
        script: None,
    };
    let measure = || -> anyhow::Result<Run> {
        wrk::run(&b(plan.warm_up))?;
        let runs = (0..plan.runs)
            .map(|_| wrk::run(&b(plan.duration)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(wrk::median(&runs))
    };
    let solo = measure()?;
    eprintln!("  {setting:?}, B alone: {solo:?}");

    // A's load runs through every run of B's, warm-up included, and a
    // little longer; its answers are 503s by design, so it is not parsed.
    let total = plan.warm_up + plan.duration * u32::try_from(plan.runs)? + plan.warm_up;
    let mut neighbour = Command::new("taskset")
        .args(["-c", CLIENT_CPU, "wrk", "-t1"])
        .arg(format!("-c{A_CONNECTIONS}"))
        .arg(format!("-d{}s", total.as_secs().max(1)))
        .args(["-H", "Host: a.localhost"])
        .arg(format!("http://{}/spin", node.public))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot run wrk")?;
    let with_neighbour = measure();
    let _ = neighbour.kill();
    let _ = neighbour.wait();
    let with_neighbour = with_neighbour?;
    eprintln!("  {setting:?}, B beside A: {with_neighbour:?}");
    Ok(Noisy {
        setting,
        solo,
        with_neighbour,
    })
}
