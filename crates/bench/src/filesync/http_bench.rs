//! Scenario 7: the HTTP API under `wrk`: `GET /check-token` throughput and
//! latency, `POST /login` throughput at the configured bcrypt cost, and
//! `/check-token` latency while logins are running.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};

use crate::filesync::api::Api;
use crate::filesync::Filesync;
use crate::plan::installed;
use crate::procs::Proc;
use crate::report::{Row, Unit, FILESYNC};

pub const CHECK_RATE: &str = "GET /check-token: throughput";
pub const CHECK_P50: &str = "GET /check-token: p50";
pub const CHECK_P99: &str = "GET /check-token: p99";
pub const LOGIN_RATE: &str = "POST /login: throughput";
pub const BUSY_RATE: &str = "GET /check-token during logins: throughput";
pub const BUSY_P50: &str = "GET /check-token during logins: p50";
pub const BUSY_P99: &str = "GET /check-token during logins: p99";
pub const TESTS: [&str; 7] = [CHECK_RATE, CHECK_P50, CHECK_P99, LOGIN_RATE, BUSY_RATE, BUSY_P50, BUSY_P99];

#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub runs: usize,
    pub duration: Duration,
    pub connections: usize,
    pub bcrypt_cost: u32,
}

/// What one wrk run reports.
#[derive(Debug, Clone, Copy, PartialEq)]
struct WrkResult {
    requests_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

pub fn run(f: &mut Filesync, root: &Path, o: Options) -> Result<Vec<Row>> {
    installed("wrk")?;
    let base = f.stack.http_url();
    let api = Api::new(base.clone())?;
    let user = api.user("wrkuser")?;
    let login_script = root.join("login.lua");
    std::fs::write(
        &login_script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = '{}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n",
            serde_json::json!({ "email": user.email, "password": user.password })
        ),
    )?;
    let bearer = format!("Authorization: Bearer {}", user.token);
    let check = |tag: &str, conns: usize| -> Result<Proc> {
        let mut cmd = wrk(o.duration, conns);
        cmd.args(["-H", &bearer]).arg(format!("{base}/check-token"));
        Proc::spawn(&format!("wrk-{tag}"), cmd, root)
    };
    let (mut alone, mut logins, mut busy) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..o.runs {
        alone.push(finish(check(&format!("check-{run}"), o.connections)?, o.duration)?);
        // Logins and checks together: the logins hold the CPU in bcrypt.
        let mut cmd = wrk(o.duration, 8);
        cmd.arg("-s").arg(&login_script).arg(format!("{base}/login"));
        let login = Proc::spawn(&format!("wrk-login-{run}"), cmd, root)?;
        let during = check(&format!("busy-{run}"), o.connections)?;
        logins.push(finish(login, o.duration)?);
        busy.push(finish(during, o.duration)?);
        f.stack.ensure_running()?;
    }
    let mut rows = Vec::new();
    let cost = format!("bcrypt cost {}", o.bcrypt_cost);
    let conns = format!("wrk, 2 threads, {} connections, {} s per run", o.connections, o.duration.as_secs());
    for (rate_test, p50, p99, results, note) in [
        (CHECK_RATE, CHECK_P50, CHECK_P99, &alone, conns.clone()),
        (BUSY_RATE, BUSY_P50, BUSY_P99, &busy, format!("{conns}; logins running meanwhile ({cost})")),
    ] {
        let series = |f: fn(&WrkResult) -> f64| results.iter().map(f).collect::<Vec<f64>>();
        // wrk gives percentiles per run; the rows show the median run's with the spread over runs.
        for (test, values, unit) in [
            (rate_test, series(|r| r.requests_per_sec), Unit::ReqPerSec),
            (p50, series(|r| r.p50_ms), Unit::Millis),
            (p99, series(|r| r.p99_ms), Unit::Millis),
        ] {
            rows.extend(Row::from_samples(test, FILESYNC, &values, unit, &note));
        }
    }
    let rates: Vec<f64> = logins.iter().map(|r| r.requests_per_sec).collect();
    rows.extend(Row::from_samples(
        LOGIN_RATE,
        FILESYNC,
        &rates,
        Unit::ReqPerSec,
        &format!("wrk, 8 connections; {cost}"),
    ));
    Ok(rows)
}

fn wrk(duration: Duration, connections: usize) -> Command {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t2", "--latency", "--timeout", "30s"])
        .arg(format!("-c{connections}"))
        .arg(format!("-d{}s", duration.as_secs().max(1)));
    cmd
}

/// Waits for a wrk run and reads its summary; any non-2xx answer or socket error fails the run.
fn finish(mut p: Proc, duration: Duration) -> Result<WrkResult> {
    let status = p.wait(duration + Duration::from_secs(60))?;
    let out = p.log_tail();
    if !status.success() {
        bail!("wrk failed ({status}):\n{out}");
    }
    parse_wrk(&out)
}

fn parse_wrk(out: &str) -> Result<WrkResult> {
    if let Some(line) = out.lines().find(|l| l.contains("Non-2xx or 3xx responses") || l.contains("Socket errors")) {
        bail!("wrk saw failures: {}\n{out}", line.trim());
    }
    let rate = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:")?.trim().parse::<f64>().ok())
        .ok_or_else(|| anyhow!("no Requests/sec in wrk output:\n{out}"))?;
    let pct = |p: &str| {
        out.lines()
            .find_map(|l| {
                let mut it = l.split_whitespace();
                (it.next()? == p).then(|| parse_duration_ms(it.next()?)).flatten()
            })
            .ok_or_else(|| anyhow!("no {p} latency in wrk output:\n{out}"))
    };
    Ok(WrkResult { requests_per_sec: rate, p50_ms: pct("50%")?, p99_ms: pct("99%")? })
}

/// wrk's "635.91us", "1.20ms", "2.01s", "1.00m" in milliseconds.
fn parse_duration_ms(s: &str) -> Option<f64> {
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => v / 1000.0,
        "ms" => v,
        "s" => v * 1000.0,
        "m" => v * 60_000.0,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "Running 1s test @ http://127.0.0.1:1/check-token
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.52ms  617.36us  12.43ms   84.02%
    Req/Sec    21.19k     1.63k   23.23k    75.00%
  Latency Distribution
     50%    1.41ms
     75%    1.72ms
     90%    2.13ms
     99%  635.91us
  42171 requests in 1.00s, 8.57MB read
Requests/sec:  42134.46
Transfer/sec:      8.56MB
";

    #[test]
    fn wrk_summary_is_read() {
        let r = parse_wrk(OUT).unwrap();
        assert_eq!(r, WrkResult { requests_per_sec: 42134.46, p50_ms: 1.41, p99_ms: 0.63591 });
    }

    #[test]
    fn wrk_errors_fail_the_run() {
        let bad = OUT.replace("Requests/sec", "  Non-2xx or 3xx responses: 17\nRequests/sec");
        assert!(parse_wrk(&bad).unwrap_err().to_string().contains("Non-2xx"));
        assert!(parse_wrk("garbage").is_err());
        assert_eq!(parse_duration_ms("2.5s"), Some(2500.0));
        assert_eq!(parse_duration_ms("abc"), None);
    }
}
