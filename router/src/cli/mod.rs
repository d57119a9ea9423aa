//! The `switchyard` command line: the server (`serve`), app tooling (`new`,
//! `build`, `check`, `deploy`) and an admin API client for everything else.

mod bundle;
mod client;
mod scaffold;
pub mod serve;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use client::{ApiFailure, Client, Connection};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "A self-hostable WebAssembly application host"
)]
struct Cli {
    #[command(flatten)]
    connection: Connection,
    /// Print the API's JSON instead of a summary.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the host (public and admin listeners) until SIGTERM/SIGINT.
    Serve(serve::ServeArgs),
    /// Create a Rust app in a new directory named like its project.
    New {
        /// The app's directory (its name is the project's).
        name: PathBuf,
        /// The switchyard-sdk crate to depend on.
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Build an app directory and pack its deploy bundle.
    Build {
        /// The app directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Where to write the bundle (default <dir>/target/switchyard/bundle.tar.gz).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Build (unless --bundle is given) and deploy an app.
    Deploy {
        /// The app directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// The project (default: `project` in switchyard.toml).
        #[arg(long)]
        project: Option<String>,
        /// Deploy this bundle instead of building.
        #[arg(long)]
        bundle: Option<PathBuf>,
    },
    /// Check that a component would be accepted at deploy.
    Check {
        /// The `.wasm` component.
        component: PathBuf,
    },
    /// Projects.
    #[command(subcommand)]
    Projects(ProjectsCmd),
    /// Builds of a project.
    Deployments {
        /// The project.
        project: String,
    },
    /// Make an earlier build active again.
    Rollback {
        /// The project.
        project: String,
        /// The build (default: the one before the active one).
        #[arg(long)]
        to: Option<String>,
    },
    /// Custom hostnames.
    #[command(subcommand)]
    Hostnames(HostnamesCmd),
    /// Environment variables.
    #[command(subcommand)]
    Env(EnvCmd),
    /// Deploy tokens.
    #[command(subcommand)]
    Tokens(TokensCmd),
    /// API keys for the database gateway.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// A project's captured output.
    Logs {
        /// The project.
        project: String,
        /// Keep printing new records.
        #[arg(long, short)]
        follow: bool,
        /// Start at this sequence number.
        #[arg(long, default_value_t = 0)]
        since: u64,
    },
    /// Suspend a project: every request gets 503.
    Suspend {
        /// The project.
        project: String,
    },
    /// Resume a suspended project.
    Resume {
        /// The project.
        project: String,
    },
}

#[derive(Subcommand)]
enum ProjectsCmd {
    /// List projects.
    List,
    /// Create a project.
    Create {
        /// Its id.
        id: String,
    },
    /// Show a project.
    Show {
        /// Its id.
        id: String,
    },
    /// Delete a project and everything it has.
    Delete {
        /// Its id.
        id: String,
    },
}

#[derive(Subcommand)]
enum HostnamesCmd {
    /// List a project's hostnames.
    List {
        /// The project.
        project: String,
    },
    /// Route a hostname (or `*.example.com`) to a project.
    Add {
        /// The project.
        project: String,
        /// The hostname.
        hostname: String,
    },
    /// Remove a hostname.
    Remove {
        /// The project.
        project: String,
        /// The hostname.
        hostname: String,
    },
}

#[derive(Subcommand)]
enum EnvCmd {
    /// List variables (secret values are not shown).
    List {
        /// The project.
        project: String,
    },
    /// Set variables: NAME=value ...
    Set {
        /// The project.
        project: String,
        /// NAME=value pairs.
        #[arg(required = true)]
        vars: Vec<String>,
        /// Mark them secret (never returned by the API).
        #[arg(long)]
        secret: bool,
    },
    /// Remove a variable.
    Unset {
        /// The project.
        project: String,
        /// The name.
        name: String,
    },
}

#[derive(Subcommand)]
enum TokensCmd {
    /// List a project's deploy tokens.
    List {
        /// The project.
        project: String,
    },
    /// Create a deploy token (shown once).
    Create {
        /// The project.
        project: String,
        /// A label.
        name: String,
    },
    /// Revoke a deploy token.
    Revoke {
        /// The project.
        project: String,
        /// The token's id.
        id: String,
    },
}

#[derive(Subcommand)]
enum KeysCmd {
    /// List a project's API keys.
    List {
        /// The project.
        project: String,
    },
    /// Create an API key (shown once).
    Create {
        /// The project.
        project: String,
        /// `public`: for browsers, client columns only, safe to publish;
        /// `server`: every column, keep it secret.
        #[arg(value_enum)]
        kind: KeyKindArg,
        /// A label.
        #[arg(long, default_value = "default")]
        name: String,
    },
    /// Revoke an API key.
    Revoke {
        /// The project.
        project: String,
        /// The key's id.
        id: String,
    },
}

/// The kinds of API key.
#[derive(Clone, Copy, clap::ValueEnum)]
enum KeyKindArg {
    Public,
    Server,
}

/// Runs the CLI; the binary's `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            match error.downcast_ref::<ApiFailure>() {
                Some(failure) => eprintln!("error: {failure}"),
                None => eprintln!("error: {error:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let json = cli.json;
    let print = |data: serde_json::Value, summary: &dyn Fn(&serde_json::Value) -> String| {
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&data).unwrap_or_default()
            );
        } else {
            println!("{}", summary(&data));
        }
    };
    match cli.command {
        Command::Serve(args) => serve::run(&args),
        Command::New { name, sdk } => {
            scaffold::create(&name, sdk.as_deref())?;
            println!(
                "created {}: `cd {} && switchyard deploy`",
                name.display(),
                name.display()
            );
            Ok(())
        }
        Command::Build { dir, out } => {
            let out = out.unwrap_or_else(|| bundle::default_path(&dir));
            let bundle = bundle::build(&dir, &out)?;
            println!(
                "built {} ({}component, {} assets)",
                bundle.path.display(),
                if bundle.has_component { "" } else { "no " },
                bundle.assets
            );
            Ok(())
        }
        Command::Check { component } => check(&component),
        Command::Deploy {
            dir,
            project,
            bundle,
        } => deploy(&cli.connection.client()?, &dir, project, bundle, json),
        Command::Projects(cmd) => {
            let client = cli.connection.client()?;
            match cmd {
                ProjectsCmd::List => print(client.list("/v1/projects")?, &|data| {
                    lines(data, |p| {
                        format!(
                            "{}  {}  {}",
                            text(&p["id"]),
                            text(&p["url"]),
                            text(&p["activeBuild"])
                        )
                    })
                }),
                ProjectsCmd::Create { id } => print(
                    client.call(
                        "POST",
                        "/v1/projects",
                        Some(serde_json::json!({ "id": id })),
                    )?,
                    &|p| format!("created {}  {}", text(&p["id"]), text(&p["url"])),
                ),
                ProjectsCmd::Show { id } => print(
                    client.call("GET", &format!("/v1/projects/{id}"), None)?,
                    &|p| serde_json::to_string_pretty(p).unwrap_or_default(),
                ),
                ProjectsCmd::Delete { id } => print(
                    client.call("DELETE", &format!("/v1/projects/{id}"), None)?,
                    &|_| format!("deleted {id}"),
                ),
            }
            Ok(())
        }
        Command::Deployments { project } => {
            let client = cli.connection.client()?;
            print(
                client.list(&format!("/v1/projects/{project}/deployments"))?,
                &|data| {
                    lines(data, |b| {
                        let active = if b["active"] == true {
                            "  (active)"
                        } else {
                            ""
                        };
                        format!("{}  {} assets{}", text(&b["id"]), b["assets"], active)
                    })
                },
            );
            Ok(())
        }
        Command::Rollback { project, to } => {
            let client = cli.connection.client()?;
            let body = to.map(|build| serde_json::json!({ "build": build }));
            print(
                client.call("POST", &format!("/v1/projects/{project}/rollback"), body)?,
                &|b| format!("{} now serves {}", project, text(&b["id"])),
            );
            Ok(())
        }
        Command::Hostnames(cmd) => {
            let client = cli.connection.client()?;
            match cmd {
                HostnamesCmd::List { project } => print(
                    client.call("GET", &format!("/v1/projects/{project}/hostnames"), None)?,
                    &|data| lines(data, |h| text(&h["hostname"])),
                ),
                HostnamesCmd::Add { project, hostname } => print(
                    client.call(
                        "POST",
                        &format!("/v1/projects/{project}/hostnames"),
                        Some(serde_json::json!({ "hostname": hostname })),
                    )?,
                    &|h| format!("{} → {project}", text(&h["hostname"])),
                ),
                HostnamesCmd::Remove { project, hostname } => print(
                    client.call(
                        "DELETE",
                        &format!("/v1/projects/{project}/hostnames/{hostname}"),
                        None,
                    )?,
                    &|_| format!("removed {hostname}"),
                ),
            }
            Ok(())
        }
        Command::Env(cmd) => {
            let client = cli.connection.client()?;
            match cmd {
                EnvCmd::List { project } => print(
                    client.call("GET", &format!("/v1/projects/{project}/env"), None)?,
                    &|data| {
                        lines(data, |v| match v["secret"] == true {
                            true => format!("{}  (secret)", text(&v["name"])),
                            false => format!("{}={}", text(&v["name"]), text(&v["value"])),
                        })
                    },
                ),
                EnvCmd::Set {
                    project,
                    vars,
                    secret,
                } => {
                    let mut list = Vec::new();
                    for pair in vars {
                        let (name, value) = pair
                            .split_once('=')
                            .with_context(|| format!("`{pair}` is not NAME=value"))?;
                        list.push(
                            serde_json::json!({ "name": name, "value": value, "secret": secret }),
                        );
                    }
                    let body = serde_json::json!({ "vars": list });
                    print(
                        client.call("PUT", &format!("/v1/projects/{project}/env"), Some(body))?,
                        &|data| {
                            format!(
                                "{project} has {} variables",
                                data.as_array().map_or(0, Vec::len)
                            )
                        },
                    );
                }
                EnvCmd::Unset { project, name } => print(
                    client.call(
                        "DELETE",
                        &format!("/v1/projects/{project}/env/{name}"),
                        None,
                    )?,
                    &|_| format!("removed {name}"),
                ),
            }
            Ok(())
        }
        Command::Tokens(cmd) => {
            let client = cli.connection.client()?;
            match cmd {
                TokensCmd::List { project } => print(
                    client.call("GET", &format!("/v1/projects/{project}/tokens"), None)?,
                    &|data| {
                        lines(data, |t| {
                            format!("{}  {}", text(&t["id"]), text(&t["name"]))
                        })
                    },
                ),
                TokensCmd::Create { project, name } => print(
                    client.call(
                        "POST",
                        &format!("/v1/projects/{project}/tokens"),
                        Some(serde_json::json!({ "name": name })),
                    )?,
                    &|t| format!("{}\n(shown once: store it now)", text(&t["token"])),
                ),
                TokensCmd::Revoke { project, id } => print(
                    client.call(
                        "DELETE",
                        &format!("/v1/projects/{project}/tokens/{id}"),
                        None,
                    )?,
                    &|_| format!("revoked {id}"),
                ),
            }
            Ok(())
        }
        Command::Keys(cmd) => {
            let client = cli.connection.client()?;
            match cmd {
                KeysCmd::List { project } => print(
                    client.call("GET", &format!("/v1/projects/{project}/keys"), None)?,
                    &|data| {
                        lines(data, |k| {
                            format!(
                                "{}  {}  {}",
                                text(&k["id"]),
                                text(&k["kind"]),
                                text(&k["name"])
                            )
                        })
                    },
                ),
                KeysCmd::Create {
                    project,
                    kind,
                    name,
                } => print(
                    client.call(
                        "POST",
                        &format!("/v1/projects/{project}/keys"),
                        Some(serde_json::json!({
                            "kind": match kind {
                                KeyKindArg::Public => "public",
                                KeyKindArg::Server => "server",
                            },
                            "name": name,
                        })),
                    )?,
                    &|k| format!("{}\n(shown once: store it now)", text(&k["key"])),
                ),
                KeysCmd::Revoke { project, id } => print(
                    client.call("DELETE", &format!("/v1/projects/{project}/keys/{id}"), None)?,
                    &|_| format!("revoked {id}"),
                ),
            }
            Ok(())
        }
        Command::Logs {
            project,
            follow,
            since,
        } => logs(&cli.connection.client()?, &project, follow, since, json),
        Command::Suspend { project } => {
            let client = cli.connection.client()?;
            print(
                client.call("POST", &format!("/v1/projects/{project}/suspend"), None)?,
                &|_| format!("{project} is suspended"),
            );
            Ok(())
        }
        Command::Resume { project } => {
            let client = cli.connection.client()?;
            print(
                client.call("POST", &format!("/v1/projects/{project}/resume"), None)?,
                &|_| format!("{project} is serving again"),
            );
            Ok(())
        }
    }
}

fn text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn lines(data: &serde_json::Value, line: impl Fn(&serde_json::Value) -> String) -> String {
    data.as_array()
        .map(|items| items.iter().map(line).collect::<Vec<_>>().join("\n"))
        .unwrap_or_default()
}

fn deploy(
    client: &Client,
    dir: &std::path::Path,
    project: Option<String>,
    bundle: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<()> {
    // A bundle built here lives in a temporary file, gone after the upload.
    let scratch = tempfile::tempdir().context("cannot create a temporary directory")?;
    let (path, manifest_project) = match bundle {
        Some(path) => (path, None),
        None => {
            let built = bundle::build(dir, &scratch.path().join("bundle.tar.gz"))?;
            (built.path, built.manifest.project)
        }
    };
    let project = project
        .or(manifest_project)
        .context("no project: pass --project or set `project` in switchyard.toml")?;
    let upload = |path: &std::path::Path| -> anyhow::Result<serde_json::Value> {
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let length = file.metadata()?.len();
        let progress = indicatif::ProgressBar::new(length);
        progress.set_style(
            indicatif::ProgressStyle::with_template("uploading {bar:30} {bytes}/{total_bytes}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let result = client.upload(
            &format!("/v1/projects/{project}/deployments"),
            progress.wrap_read(file),
            length,
        );
        progress.finish_and_clear();
        result
    };
    // A new project is created first (an admin token can), so that a large
    // upload is sent once.
    match client.call("GET", &format!("/v1/projects/{project}"), None) {
        Ok(_) => {}
        Err(e)
            if e.downcast_ref::<ApiFailure>()
                .is_some_and(|f| f.status == 404) =>
        {
            match client.call(
                "POST",
                "/v1/projects",
                Some(serde_json::json!({ "id": project })),
            ) {
                Ok(_) => {}
                Err(create)
                    if create
                        .downcast_ref::<ApiFailure>()
                        .is_some_and(|f| f.status == 403) =>
                {
                    bail!("project `{project}` does not exist, and this token may not create it")
                }
                Err(create) => return Err(create),
            }
        }
        Err(e) => return Err(e),
    }
    let build = upload(&path)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&build)?);
    } else {
        println!(
            "deployed {} as {}",
            text(&build["project"]),
            text(&build["id"])
        );
        println!("{}", text(&build["url"]));
    }
    Ok(())
}

fn logs(
    client: &Client,
    project: &str,
    follow: bool,
    since: u64,
    json: bool,
) -> anyhow::Result<()> {
    let show = |record: &serde_json::Value| {
        if json {
            println!("{record}");
        } else {
            println!(
                "{} {:>6} {}",
                text(&record["requestId"]),
                text(&record["source"]),
                text(&record["message"])
            );
        }
    };
    if follow {
        return client.stream_lines(
            &format!("/v1/projects/{project}/logs?follow=true&since={since}"),
            |line| {
                show(&serde_json::from_str(line)?);
                Ok(())
            },
        );
    }
    let data = client.call(
        "GET",
        &format!("/v1/projects/{project}/logs?since={since}&limit=1000"),
        None,
    )?;
    for record in data["records"].as_array().into_iter().flatten() {
        show(record);
    }
    Ok(())
}

fn check(path: &std::path::Path) -> anyhow::Result<()> {
    use switchyard_runtime::backend::Backends;
    use switchyard_runtime::{Runtime, RuntimeConfig};
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    // A throwaway data directory: checking leaves nothing behind.
    let scratch = tempfile::tempdir().context("cannot create a scratch directory")?;
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    tokio.block_on(async {
        let backends = Backends::sqlite(scratch.path())?;
        let config = RuntimeConfig {
            artifact_dir: scratch.path().join("artifacts"),
            ..RuntimeConfig::default()
        };
        let runtime = Runtime::new(config, backends)?;
        match runtime.compile(&bytes).await {
            Ok(id) => {
                println!(
                    "ok: {} ({} bytes) is a valid Switchyard app",
                    path.display(),
                    bytes.len()
                );
                println!("component id: {id}");
                Ok(())
            }
            Err(e) => bail!("refused: {}: {e}", e.code()),
        }
    })
}
