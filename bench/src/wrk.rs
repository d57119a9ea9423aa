//! The load generator: `wrk -t1 -c64 --latency`, pinned to the client CPU,
//! and its report parsed.

use crate::server::CLIENT_CPU;
use anyhow::{Context, bail};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// What one load run is.
#[derive(Clone, Debug)]
pub struct Load<'a> {
    pub addr: SocketAddr,
    pub host: &'a str,
    pub path: &'a str,
    pub connections: u32,
    pub duration: Duration,
    /// A Lua script that builds each request (it then picks the host).
    pub script: Option<&'a Path>,
}

/// What one run measured.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    pub requests_per_second: f64,
    pub p50: Duration,
    pub p99: Duration,
}

/// Runs wrk once. Fails if any response was not 2xx/3xx or a socket
/// error occurred: a benchmark of error pages measures nothing.
pub fn run(load: &Load<'_>) -> anyhow::Result<Run> {
    let mut command = Command::new("taskset");
    command.args(["-c", CLIENT_CPU, "wrk", "-t1", "--latency"]);
    command.arg(format!("-c{}", load.connections));
    command.arg(format!("-d{}s", load.duration.as_secs().max(1)));
    command.args(["-H", &format!("Host: {}", load.host)]);
    if let Some(script) = load.script {
        command.arg("-s").arg(script);
    }
    command.arg(format!("http://{}{}", load.addr, load.path));
    let output = command.output().context("cannot run wrk")?;
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "wrk failed: {}{}",
            report,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse(&report)
}

fn parse(report: &str) -> anyhow::Result<Run> {
    for bad in ["Non-2xx or 3xx responses", "Socket errors"] {
        if let Some(line) = report.lines().find(|l| l.trim_start().starts_with(bad)) {
            bail!("the run had errors ({}):\n{report}", line.trim());
        }
    }
    let percentile = |p: &str| -> anyhow::Result<Duration> {
        let line = report
            .lines()
            .find(|l| l.trim_start().starts_with(p))
            .with_context(|| format!("no {p} line in wrk's report:\n{report}"))?;
        let value = line.split_whitespace().nth(1).context("no latency value")?;
        duration(value)
    };
    let requests_per_second = report
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk's report:\n{report}"))?;
    Ok(Run {
        requests_per_second,
        p50: percentile("50%")?,
        p99: percentile("99%")?,
    })
}

/// wrk's durations: `812.00us`, `1.23ms`, `2.01s`, `1.5m`.
fn duration(value: &str) -> anyhow::Result<Duration> {
    let split = value
        .find(|c: char| c.is_ascii_alphabetic())
        .with_context(|| format!("no unit in {value:?}"))?;
    let (number, unit) = value.split_at(split);
    let number: f64 = number
        .parse()
        .with_context(|| format!("bad number {value:?}"))?;
    let seconds = match unit {
        "us" => number / 1e6,
        "ms" => number / 1e3,
        "s" => number,
        "m" => number * 60.0,
        _ => bail!("unknown unit in {value:?}"),
    };
    Ok(Duration::from_secs_f64(seconds))
}

/// The median of several runs, each figure taken separately.
pub fn median(runs: &[Run]) -> Run {
    let pick = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or(0.0)
    };
    Run {
        requests_per_second: pick(runs.iter().map(|r| r.requests_per_second).collect()),
        p50: Duration::from_secs_f64(pick(runs.iter().map(|r| r.p50.as_secs_f64()).collect())),
        p99: Duration::from_secs_f64(pick(runs.iter().map(|r| r.p99.as_secs_f64()).collect())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "Running 10s test @ http://127.0.0.1:3000/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   276.17us   51.88us   3.59ms   90.96%
    Req/Sec   231.98k     5.35k  238.13k    87.00%
  Latency Distribution
     50%  270.00us
     75%  287.00us
     90%  311.00us
     99%  430.00us
  2308312 requests in 10.00s, 194.59MB read
Requests/sec: 230823.59
Transfer/sec:     19.46MB
";

    #[test]
    fn a_report_is_parsed() {
        let run = parse(REPORT).unwrap();
        assert_eq!(run.requests_per_second, 230823.59);
        assert_eq!(run.p50, Duration::from_micros(270));
        assert_eq!(run.p99, Duration::from_micros(430));
    }

    #[test]
    fn errors_fail_the_run() {
        let bad = REPORT.replace(
            "Requests/sec",
            "  Non-2xx or 3xx responses: 12\nRequests/sec",
        );
        assert!(parse(&bad).is_err());
    }

    #[test]
    fn units_are_read() {
        assert_eq!(duration("1.5ms").unwrap(), Duration::from_micros(1500));
        assert_eq!(duration("2.00s").unwrap(), Duration::from_secs(2));
        assert!(duration("3").is_err());
    }
}
