//! Markdown for the results, and writing it into the benchmarks page
//! between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`, so the prose
//! around the tables stays as written.

use crate::cold_start::ColdStart;
use crate::compare::{self, Comparison};
use crate::density::Density;
use crate::noisy::Noisy;
use crate::{Plan, Tools};
use anyhow::Context;
use std::fmt::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Where and with what the figures were measured.
pub fn header(tools: &Tools, plan: &Plan, quick: bool) -> anyhow::Result<String> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let output = |program: &Path, args: &[&str]| {
        Command::new(program)
            .args(args)
            .output()
            .map(|o| {
                let text = if o.stdout.is_empty() {
                    o.stderr
                } else {
                    o.stdout
                };
                String::from_utf8_lossy(&text)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_owned()
            })
            .unwrap_or_else(|_| "unknown".into())
    };
    let mut commit = output(Path::new("git"), &["rev-parse", "--short", "HEAD"]);
    if !output(
        Path::new("git"),
        &["status", "--porcelain", "--untracked-files=no"],
    )
    .is_empty()
    {
        commit.push_str(" (with uncommitted changes)");
    }
    let mut out = String::new();
    writeln!(
        out,
        "Measured {} on {cpu}, {cpus} CPUs, Linux {}; Switchyard {commit}; {}; {}; {}; {}.",
        output(Path::new("date"), &["-u", "+%Y-%m-%d %H:%M UTC"]),
        output(Path::new("uname"), &["-r"]),
        output(&tools.wasmtime, &["--version"]),
        output(&tools.nginx, &["-v"]).trim_start_matches("nginx version: "),
        output(Path::new("wrk"), &["-v"])
            .split(" [")
            .next()
            .unwrap_or(""),
        output(Path::new("rustc"), &["-V"]),
    )?;
    writeln!(
        out,
        "Command: `bench/run{}`; each figure the median of {} run(s) of {} s after a {} s warm-up, wrk with {} connections.",
        invocation(quick),
        plan.runs,
        plan.duration.as_secs(),
        plan.warm_up.as_secs(),
        plan.connections
    )?;
    Ok(out)
}

/// The arguments the suite was run with, but for the tool paths that
/// `bench/run` itself passes.
fn invocation(quick: bool) -> String {
    let mut shown = String::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--wasmtime" {
            args.next();
        } else if !arg.starts_with("--wasmtime=") {
            shown.push(' ');
            shown.push_str(&arg);
        }
    }
    if quick && !shown.contains("--quick") {
        shown.push_str(" --quick");
    }
    shown
}

pub fn comparison(c: &Comparison) -> String {
    let mut out = String::from("| system | requests/s | p50 | p99 |\n|---|---:|---:|---:|\n");
    for row in &c.rows {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {} | {} |",
            row.name,
            row.run.requests_per_second,
            ms(row.run.p50),
            ms(row.run.p99)
        );
    }
    out.push_str("\n| ratio | measured | target | |\n|---|---:|---:|---|\n");
    let rate = |name| c.get(name).map(|r| r.requests_per_second);
    let p99 = |name| c.get(name).map(|r| r.p99.as_secs_f64());
    let ratios = [
        Ratio::at_least(
            "Switchyard hello ÷ `wasmtime serve` (requests/s)",
            rate(compare::SWITCHYARD),
            rate(compare::WASMTIME),
            5.0,
        ),
        Ratio::at_least(
            "Switchyard hello ÷ `wasmtime serve` with 128× reuse (requests/s)",
            rate(compare::SWITCHYARD),
            rate(compare::WASMTIME_REUSE),
            1.0,
        ),
        Ratio::at_least(
            "Switchyard hello ÷ raw hyper (requests/s)",
            rate(compare::SWITCHYARD),
            rate(compare::HYPER),
            0.3,
        ),
        Ratio {
            at_least: false,
            ..Ratio::at_least(
                "Switchyard hello p99 ÷ raw hyper p99",
                p99(compare::SWITCHYARD),
                p99(compare::HYPER),
                2.0,
            )
        },
        Ratio::at_least(
            "Switchyard ÷ nginx, 1 KiB (requests/s)",
            rate(compare::SWITCHYARD_1K),
            rate(compare::NGINX_1K),
            1.2,
        ),
        Ratio::at_least(
            "Switchyard ÷ nginx, 100 KiB (requests/s)",
            rate(compare::SWITCHYARD_100K),
            rate(compare::NGINX_100K),
            1.0,
        ),
    ];
    for ratio in ratios {
        let (Some(ours), Some(theirs)) = (ratio.ours, ratio.theirs) else {
            continue;
        };
        let measured = ours / theirs;
        let (bound, met) = if ratio.at_least {
            ("≥", measured >= ratio.target)
        } else {
            ("≤", measured <= ratio.target)
        };
        let _ = writeln!(
            out,
            "| {} | {measured:.2}× | {bound} {}× | {} |",
            ratio.name,
            ratio.target,
            if met { "met" } else { "**missed**" }
        );
    }
    out
}

/// A performance target: `ours ÷ theirs` against `target`.
struct Ratio {
    name: &'static str,
    ours: Option<f64>,
    theirs: Option<f64>,
    target: f64,
    at_least: bool,
}

impl Ratio {
    fn at_least(name: &'static str, ours: Option<f64>, theirs: Option<f64>, target: f64) -> Self {
        Ratio {
            name,
            ours,
            theirs,
            target,
            at_least: true,
        }
    }
}

pub fn cold_start(c: &ColdStart) -> String {
    let mut out =
        String::from("| process start → first 200 | median | fastest |\n|---|---:|---:|\n");
    for (name, timing) in &c.starts {
        let _ = writeln!(
            out,
            "| {name} | {} | {} |",
            ms(timing.median),
            ms(timing.min)
        );
    }
    let slower = c.after_deploy.median.saturating_sub(c.warm.median);
    let _ = writeln!(
        out,
        "\n| request on a running node | median | fastest |\n|---|---:|---:|\n\
         | first request right after deploying a new component | {} | {} |\n\
         | warm request | {} | {} |\n\n\
         The first request after a deploy is {} slower than a warm one (target: ≤ 2 ms).",
        ms(c.after_deploy.median),
        ms(c.after_deploy.min),
        ms(c.warm.median),
        ms(c.warm.min),
        ms(slower)
    );
    out
}

pub fn density(d: &Density) -> String {
    let mib = |bytes: u64| format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0));
    format!(
        "| {} projects, {} distinct components | |\n|---|---:|\n\
         | deploying them all (4 clients) | {:.0} s |\n\
         | RSS after the deploys | {} |\n\
         | first request to each project, one after another: median / p99 | {} / {} |\n\
         | RSS after every project served once | {} |\n\
         | requests to random projects: requests/s | {:.0} |\n\
         | requests to random projects: p50 / p99 (target p99 ≤ 10 ms) | {} / {} |\n\
         | RSS after the load (target ≤ 1 GiB) | {} |\n",
        d.projects,
        d.components,
        d.deploy_time.as_secs_f64(),
        mib(d.rss_after_deploys),
        ms(d.first_requests.median),
        ms(d.first_requests_p99),
        mib(d.rss_after_first_requests),
        d.random.requests_per_second,
        ms(d.random.p50),
        ms(d.random.p99),
        mib(d.rss_after_load),
    )
}

pub fn noisy(runs: &[Noisy]) -> String {
    let mut out = format!(
        "Tenant B: hello, {} connections. Tenant A: `/spin` (never ends) at its concurrency of {}, each cut at {} ms, driven by as many connections.\n\n\
         | epoch tick | background lane | B alone: req/s, p50 / p99 | B beside A: req/s, p50 / p99 | p99 ratio (target ≤ 1.5×) |\n|---|---|---:|---:|---:|\n",
        crate::noisy::B_CONNECTIONS,
        crate::noisy::A_CONCURRENCY,
        crate::noisy::A_WALL_CLOCK_MS,
    );
    for run in runs {
        let _ = writeln!(
            out,
            "| {} ms | {} | {:.0}, {} / {} | {:.0}, {} / {} | {:.2}× |",
            run.setting.epoch_tick_ms,
            match run.setting.background_after_ms {
                0 => "off".to_owned(),
                ms => format!("after {ms} ms"),
            },
            run.solo.requests_per_second,
            ms(run.solo.p50),
            ms(run.solo.p99),
            run.with_neighbour.requests_per_second,
            ms(run.with_neighbour.p50),
            ms(run.with_neighbour.p99),
            run.with_neighbour.p99.as_secs_f64() / run.solo.p99.as_secs_f64().max(1e-9),
        );
    }
    out
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Replaces the section `name` in `page`, or appends it.
pub fn write_section(page: &Path, name: &str, body: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(page).unwrap_or_default();
    let (open, close) = (
        format!("<!-- bench:{name} -->"),
        format!("<!-- /bench:{name} -->"),
    );
    let section = format!("{open}\n{body}{close}");
    let updated = match (text.find(&open), text.find(&close)) {
        (Some(start), Some(end)) if end > start => {
            format!("{}{section}{}", &text[..start], &text[end + close.len()..])
        }
        _ => format!("{text}\n{section}\n"),
    };
    std::fs::write(page, updated).with_context(|| format!("cannot write {}", page.display()))
}
