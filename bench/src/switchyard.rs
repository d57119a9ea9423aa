//! A Switchyard node under test, started from the release binary with a
//! data directory of its own, and deploys through its admin API.

use crate::http::{Connection, Request};
use crate::server::{Server, free_addr};
use anyhow::{Context, bail};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The admin token the benchmark's nodes are given.
const TOKEN: &str = "sya_benchmark-admin-token";

/// A node: its process and its two listeners.
pub struct Node {
    pub server: Server,
    pub public: SocketAddr,
    pub admin: SocketAddr,
}

/// How to start one.
pub struct NodeConfig<'a> {
    pub binary: &'a Path,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// `SWITCHYARD__…` settings beyond the benchmark's own.
    pub settings: Vec<(&'a str, String)>,
}

impl Node {
    /// Starts a node and waits for its admin listener.
    pub fn start(config: &NodeConfig<'_>) -> anyhow::Result<Node> {
        let (public, admin) = (free_addr()?, free_addr()?);
        let (mut node, started) = Self::spawn(config, public, admin)?;
        node.server.wait_ok(admin, "localhost", "/livez", started)?;
        Ok(node)
    }

    /// Starts a node on the given listeners, without waiting.
    pub fn spawn(
        config: &NodeConfig<'_>,
        public: SocketAddr,
        admin: SocketAddr,
    ) -> anyhow::Result<(Node, Instant)> {
        std::fs::create_dir_all(&config.data_dir)?;
        // The rate limiter runs on every request, with limits no benchmark
        // reaches: the figures measure it, not its refusals.
        let mut env = vec![
            ("SWITCHYARD__ADMIN__TOKEN", TOKEN.to_owned()),
            (
                "SWITCHYARD__TENANTS__REQUESTS_PER_MINUTE",
                u32::MAX.to_string(),
            ),
            ("SWITCHYARD__TENANTS__BURST", u32::MAX.to_string()),
        ];
        env.extend(config.settings.iter().cloned());
        let (public_arg, admin_arg) = (public.to_string(), admin.to_string());
        let data_arg = config.data_dir.display().to_string();
        let started = Instant::now();
        let server = Server::start(
            "switchyard",
            config.binary,
            &[
                "serve",
                "--data-dir",
                &data_arg,
                "--listen",
                &public_arg,
                "--admin-listen",
                &admin_arg,
            ],
            &env,
            &config.log,
        )?;
        Ok((
            Node {
                server,
                public,
                admin,
            },
            started,
        ))
    }

    /// A connection to the admin API.
    pub fn admin(&self) -> anyhow::Result<Admin> {
        Ok(Admin {
            connection: Connection::open(self.admin)?,
        })
    }
}

/// The admin API over one connection.
pub struct Admin {
    connection: Connection,
}

impl Admin {
    fn call(&mut self, method: &str, path: &str, kind: &str, body: &[u8]) -> anyhow::Result<u16> {
        let authorization = format!("Bearer {TOKEN}");
        let response = self.connection.send(&Request {
            method,
            path,
            host: "localhost",
            headers: &[("authorization", &authorization), ("content-type", kind)],
            body,
        })?;
        match response.status {
            200 | 201 => Ok(response.status),
            status => bail!("{method} {path}: {status} {}", response.text()),
        }
    }

    pub fn create_project(&mut self, project: &str) -> anyhow::Result<()> {
        let body = format!(r#"{{"id":"{project}"}}"#);
        self.call("POST", "/v1/projects", "application/json", body.as_bytes())
            .map(drop)
    }

    /// Uploads a bundle (see [`bundle`]) as the project's new build.
    pub fn deploy(&mut self, project: &str, bundle: &[u8]) -> anyhow::Result<()> {
        let path = format!("/v1/projects/{project}/deployments");
        self.call("POST", &path, "application/x-tar", bundle)
            .map(drop)
            .with_context(|| format!("deploying {project}"))
    }
}

/// A deploy bundle: the manifest, an optional component, and assets
/// (`(path under assets/, bytes)`).
pub fn bundle(
    project: &str,
    component: Option<&[u8]>,
    assets: &[(&str, &[u8])],
) -> anyhow::Result<Vec<u8>> {
    bundle_with(project, "", component, assets)
}

/// [`bundle`] with `manifest` (TOML) added to the manifest.
pub fn bundle_with(
    project: &str,
    manifest: &str,
    component: Option<&[u8]>,
    assets: &[(&str, &[u8])],
) -> anyhow::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let manifest = format!("project = \"{project}\"\n{manifest}");
    let mut entries: Vec<(String, &[u8])> = vec![("switchyard.toml".into(), manifest.as_bytes())];
    if let Some(component) = component {
        entries.push(("app.wasm".into(), component));
    }
    for (path, bytes) in assets {
        entries.push((format!("assets/{path}"), bytes));
    }
    for (path, bytes) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, path, bytes)?;
    }
    Ok(builder.into_inner()?)
}

/// `component` with a custom section naming `variant` appended: the same
/// code under a distinct hash, so it is compiled and cached as a component
/// of its own.
pub fn variant(component: &[u8], variant: usize) -> Vec<u8> {
    let name = b"switchyard-bench-variant";
    let payload = variant.to_le_bytes();
    let mut section = Vec::new();
    leb128(&mut section, name.len() + payload.len() + 1);
    section.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
    section.extend_from_slice(name);
    section.extend_from_slice(&payload);
    let mut out = component.to_vec();
    out.push(0); // custom section id
    out.extend_from_slice(&section);
    out
}

fn leb128(out: &mut Vec<u8>, mut value: usize) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}
