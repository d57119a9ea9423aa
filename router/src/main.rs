//! `switchyard`: the host's command-line entry point.
//!
//! Today it checks components the way a deploy will; serving traffic
//! (`switchyard serve`) comes with the router.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use switchyard_runtime::backend::kv::SqliteKv;
use switchyard_runtime::{Runtime, RuntimeConfig};

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "A self-hostable WebAssembly application host"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Checks that a component would be accepted at deploy: that it is a
    /// component, imports only what Switchyard provides, links, exports
    /// `wasi:http/incoming-handler`, and compiles. Exits 1 if not.
    Check {
        /// The `.wasm` component to check.
        component: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { component } => check(component),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: PathBuf) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    // A throwaway data directory: checking leaves nothing behind.
    let scratch = tempfile::tempdir().context("cannot create a scratch directory")?;
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    tokio.block_on(async {
        let kv = SqliteKv::open(scratch.path().join("kv.sqlite"))?;
        let config = RuntimeConfig {
            artifact_dir: scratch.path().join("artifacts"),
            ..RuntimeConfig::default()
        };
        let runtime = Runtime::new(config, Arc::new(kv))?;
        match runtime.compile(&bytes).await {
            Ok(id) => {
                println!(
                    "ok: {} ({} bytes) is a valid Switchyard app",
                    path.display(),
                    bytes.len()
                );
                println!("component id: {id}");
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                println!("refused: {}: {e}", e.code());
                Ok(ExitCode::FAILURE)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(path: &std::path::Path) -> ExitCode {
        check(path.to_path_buf()).expect("check runs")
    }

    #[test]
    fn accepts_a_valid_app_and_refuses_a_core_module() {
        assert_eq!(
            run(std::path::Path::new(switchyard_test_artifacts::HELLO)),
            ExitCode::SUCCESS
        );
        let dir = tempfile::tempdir().unwrap();
        let module = dir.path().join("module.wasm");
        std::fs::write(&module, switchyard_test_artifacts::wat("core-module", &[])).unwrap();
        assert_eq!(run(&module), ExitCode::FAILURE);
        assert!(check(dir.path().join("missing.wasm")).is_err());
    }
}
