//! `switchyard-bench`: Switchyard measured beside what an operator would
//! run instead, on one machine, in one run. Servers run one at a time on
//! CPU 0, wrk on CPU 1; every figure is the median of several runs after a
//! warm-up. Results go to stderr as they come and, as markdown tables, into
//! `docs/BENCHMARKS.md`.
//!
//! `bench/run` installs the tools and builds what this needs; see
//! `docs/BENCHMARKS.md` for the method.

mod cold_start;
mod compare;
mod density;
mod http;
mod noisy;
mod report;
mod server;
mod switchyard;
mod wrk;

use clap::{Parser, ValueEnum};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Parser)]
#[command(
    about = "Side-by-side benchmarks of Switchyard against raw hyper, wasmtime serve and nginx"
)]
struct Args {
    /// What to measure.
    #[arg(value_enum, default_value = "all")]
    suite: Suite,
    /// One short run of everything and a small density test: checks the
    /// harness, measures nothing worth quoting.
    #[arg(long)]
    quick: bool,
    /// Projects for the density test.
    #[arg(long, default_value_t = 10_000)]
    projects: usize,
    /// Distinct components among them.
    #[arg(long, default_value_t = 1_000)]
    components: usize,
    /// The markdown file the results are written into (between markers).
    #[arg(long, default_value = "docs/BENCHMARKS.md")]
    out: PathBuf,
    /// Scratch space: data directories, logs, configs.
    #[arg(long, default_value = "target/bench/work")]
    work_dir: PathBuf,
    #[arg(long, default_value = "target/release/switchyard")]
    switchyard: PathBuf,
    #[arg(long, default_value = "target/release/hyper-hello")]
    hyper_hello: PathBuf,
    #[arg(long, default_value = "target/bench/wasmtime")]
    wasmtime: PathBuf,
    #[arg(long, default_value = "/usr/sbin/nginx")]
    nginx: PathBuf,
    /// The dynamic app every system serves: examples/hello.
    #[arg(long, default_value = "target/guests/wasm32-wasip2/release/hello.wasm")]
    component: PathBuf,
    /// The noisy neighbour: the hostile test guest (its `/spin` route).
    #[arg(
        long,
        default_value = "target/guests/wasm32-wasip2/release/hostile.wasm"
    )]
    hostile: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Suite {
    All,
    Compare,
    ColdStart,
    Density,
    Noisy,
}

/// The programs and the component under test.
pub struct Tools {
    pub switchyard: PathBuf,
    pub hyper_hello: PathBuf,
    pub wasmtime: PathBuf,
    pub nginx: PathBuf,
    pub component: PathBuf,
    pub hostile: PathBuf,
}

/// How long and how often to measure.
pub struct Plan {
    pub runs: usize,
    pub duration: Duration,
    pub warm_up: Duration,
    pub connections: u32,
    pub cold_starts: usize,
    pub density_projects: usize,
    pub density_components: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tools = Tools {
        switchyard: args.switchyard,
        hyper_hello: args.hyper_hello,
        wasmtime: args.wasmtime,
        nginx: args.nginx,
        component: args.component,
        hostile: args.hostile,
    };
    for program in [
        &tools.switchyard,
        &tools.hyper_hello,
        &tools.wasmtime,
        &tools.nginx,
        &tools.component,
        &tools.hostile,
    ] {
        anyhow::ensure!(
            program.is_file(),
            "{} is missing: run bench/run, which builds and installs what the benchmarks need",
            program.display()
        );
    }
    let plan = if args.quick {
        Plan {
            runs: 1,
            duration: Duration::from_secs(2),
            warm_up: Duration::from_secs(1),
            connections: 64,
            cold_starts: 3,
            density_projects: args.projects.min(200),
            density_components: args.components.min(20),
        }
    } else {
        Plan {
            runs: 3,
            duration: Duration::from_secs(10),
            warm_up: Duration::from_secs(3),
            connections: 64,
            cold_starts: 10,
            density_projects: args.projects,
            density_components: args.components,
        }
    };
    let work = fresh_dir(&args.work_dir)?;
    let mut sections = Vec::new();
    let wants = |suite| args.suite == Suite::All || args.suite == suite;
    if wants(Suite::Compare) {
        eprintln!("comparison:");
        let comparison = compare::run(&tools, &plan, &work)?;
        sections.push(("compare", report::comparison(&comparison)));
    }
    if wants(Suite::ColdStart) {
        eprintln!("cold start:");
        let cold = cold_start::run(&tools, &plan, &work)?;
        sections.push(("cold-start", report::cold_start(&cold)));
    }
    if wants(Suite::Density) {
        eprintln!("density:");
        let density = density::run(&tools, &plan, &work)?;
        sections.push(("density", report::density(&density)));
    }
    if wants(Suite::Noisy) {
        eprintln!("noisy neighbour:");
        let noisy = noisy::run(&tools, &plan, &work)?;
        sections.push(("noisy", report::noisy(&noisy)));
    }
    let header = report::header(&tools, &plan, args.quick)?;
    for (name, body) in &sections {
        println!("{body}");
        if !args.quick {
            report::write_section(&args.out, name, &format!("{header}\n{body}"))?;
        }
    }
    if args.quick {
        eprintln!("(--quick: {} left as it was)", args.out.display());
    }
    Ok(())
}

/// Empties `dir` (scratch from an earlier run) and returns it absolute.
fn fresh_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    Ok(dir.canonicalize()?)
}
