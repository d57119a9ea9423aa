//! A client of the admin API for the CLI.
//!
//! The server and token come from flags, then `SWITCHYARD_URL` and
//! `SWITCHYARD_TOKEN`, then a CLI config file (`--cli-config`, default
//! `~/.config/switchyard/cli.toml`, keys `server` and `token`), then, for the
//! token, `./switchyard-data/admin-token` (what a local `switchyard serve`
//! generates). The default server is `http://127.0.0.1:8081`.

use anyhow::{Context, anyhow, bail};
use serde::Deserialize;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

/// Most pages [`Client::list`] fetches.
const MAX_PAGES: usize = 10_000;

/// Where the admin API is and how to authenticate.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct Connection {
    /// The admin API's base URL.
    #[arg(long, global = true, env = "SWITCHYARD_URL")]
    pub server: Option<String>,
    /// A bearer token (admin, or a project's deploy token).
    #[arg(long, global = true, env = "SWITCHYARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A CLI config file with `server` and `token`.
    #[arg(long, global = true, env = "SWITCHYARD_CLI_CONFIG")]
    pub cli_config: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CliConfig {
    server: Option<String>,
    token: Option<String>,
}

/// A configured client.
pub struct Client {
    base: String,
    token: String,
    agent: ureq::Agent,
}

/// An error the API answered with.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message} (status {status}, request {request_id})")]
pub struct ApiFailure {
    /// HTTP status.
    pub status: u16,
    /// The stable code.
    pub code: String,
    /// The message.
    pub message: String,
    /// The request id, for the server's logs.
    pub request_id: String,
}

impl Connection {
    /// Resolves the server and token.
    pub fn client(&self) -> anyhow::Result<Client> {
        let file = self.file_config()?;
        let base = self
            .server
            .clone()
            .or(file.server)
            .unwrap_or_else(|| "http://127.0.0.1:8081".into());
        let token = match self.token.clone().or(file.token) {
            Some(token) => token,
            None => std::fs::read_to_string("switchyard-data/admin-token")
                .map(|t| t.trim().to_owned())
                .map_err(|_| anyhow!("no token: pass --token, set SWITCHYARD_TOKEN, or run next to ./switchyard-data"))?,
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(None)
            .timeout_connect(Some(Duration::from_secs(10)))
            .build()
            .into();
        Ok(Client {
            base: base.trim_end_matches('/').to_owned(),
            token,
            agent,
        })
    }

    fn file_config(&self) -> anyhow::Result<CliConfig> {
        let (path, explicit) = match &self.cli_config {
            Some(path) => (path.clone(), true),
            None => match std::env::var_os("HOME") {
                Some(home) => (
                    PathBuf::from(home).join(".config/switchyard/cli.toml"),
                    false,
                ),
                None => return Ok(CliConfig::default()),
            },
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).with_context(|| format!("{}", path.display())),
            Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => {
                Ok(CliConfig::default())
            }
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }
}

impl Client {
    /// The public URL of the API path `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Calls the API with an optional JSON body; returns `data`.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        let mut success = self.request(method, path, body)?;
        Ok(success["data"].take())
    }

    /// GETs every page of the list at `path` (following `meta.cursor`) and
    /// returns the items as one array.
    pub fn list(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        // A misbehaving server must not keep the CLI paging forever.
        for _ in 0..MAX_PAGES {
            let page = match &cursor {
                Some(cursor) => format!("{path}?limit=200&cursor={}", query_escape(cursor)),
                None => format!("{path}?limit=200"),
            };
            let mut success = self.request("GET", &page, None)?;
            match success["data"].take() {
                serde_json::Value::Array(page_items) => items.extend(page_items),
                _ => bail!("the server answered {path} with something other than a list"),
            }
            match success["meta"]["cursor"].as_str() {
                Some(next) if cursor.as_deref() != Some(next) => cursor = Some(next.to_owned()),
                _ => return Ok(serde_json::Value::Array(items)),
            }
        }
        bail!("{path}: more than {MAX_PAGES} pages")
    }

    /// Calls the API; returns the whole success envelope.
    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        let url = self.url(path);
        let request = http::Request::builder()
            .method(method)
            .uri(&url)
            .header("authorization", format!("Bearer {}", self.token));
        let response = match body {
            Some(json) => self.agent.run(
                request
                    .header("content-type", "application/json")
                    .body(json.to_string())
                    .context("building the request")?,
            ),
            None => self
                .agent
                .run(request.body(()).context("building the request")?),
        }
        .with_context(|| format!("cannot reach {url}"))?;
        envelope(response)
    }

    /// Uploads `reader` (of `length` bytes) to `path` as a bundle.
    pub fn upload(
        &self,
        path: &str,
        reader: impl Read + Send + 'static,
        length: u64,
    ) -> anyhow::Result<serde_json::Value> {
        let url = self.url(path);
        let response = self
            .agent
            .post(&url)
            .header("authorization", &format!("Bearer {}", self.token))
            .header("content-type", "application/gzip")
            .header("content-length", &length.to_string())
            .send(ureq::SendBody::from_owned_reader(reader))
            .with_context(|| format!("cannot reach {url}"))?;
        let mut success = envelope(response)?;
        Ok(success["data"].take())
    }

    /// Streams the body of a GET, line by line, to `each`.
    pub fn stream_lines(
        &self,
        path: &str,
        mut each: impl FnMut(&str) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let url = self.url(path);
        let response = self
            .agent
            .get(&url)
            .header("authorization", &format!("Bearer {}", self.token))
            .call()
            .with_context(|| format!("cannot reach {url}"))?;
        if !response.status().is_success() {
            envelope(response)?;
            bail!("unexpected response");
        }
        let reader = std::io::BufReader::new(response.into_body().into_reader());
        for line in std::io::BufRead::lines(reader) {
            let line = line.context("the stream broke off")?;
            if !line.trim().is_empty() {
                each(&line)?;
            }
        }
        Ok(())
    }
}

/// The `data` of a success envelope, or the error as [`ApiFailure`].
/// Percent-encodes everything but unreserved characters, for a query value.
fn query_escape(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The success envelope of `response`, or its error as an [`ApiFailure`].
fn envelope(mut response: http::Response<ureq::Body>) -> anyhow::Result<serde_json::Value> {
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .with_config()
        .limit(64 * 1024 * 1024)
        .read_to_string()
        .context("cannot read the response")?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("the server answered {status} with something other than JSON"))?;
    if json["ok"] == serde_json::Value::Bool(true) {
        return Ok(json);
    }
    let error = &json["error"];
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    Err(ApiFailure {
        status,
        code: text(&error["code"]),
        message: text(&error["message"]),
        request_id: text(&error["requestId"]),
    }
    .into())
}
