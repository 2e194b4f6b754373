//! The `mock-upstream` command line: `[--addr IP] [--port N] [--require-key K]... [--model M]...`.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use super::server::{spawn, MockConfig};

const USAGE: &str =
    "usage: mock-upstream [--addr 127.0.0.1] [--port 0] [--require-key K]... [--model M]...
  --addr IP          address to bind (default 127.0.0.1)
  --port N           port to bind (default 0: any free port)
  --require-key K    accept only these keys (repeatable; MOCK_KEYS=k1,k2 adds more)
  --model M          ids listed by GET /v1/models (repeatable; replaces the default list)
Prints `LISTENING http://HOST:PORT` once bound, serves until SIGTERM/SIGINT.";

/// Parses the arguments (without the program name) and the `MOCK_KEYS` value into a config.
pub fn parse_args<I: IntoIterator<Item = String>>(
    args: I,
    mock_keys: Option<&str>,
) -> Result<MockConfig, String> {
    let mut config = MockConfig::default();
    let mut ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut port = 0u16;
    let mut models = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        if flag == "--help" || flag == "-h" {
            return Err(String::new());
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or(format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--addr" => ip = value()?.parse().map_err(|e| format!("--addr: {e}"))?,
            "--port" => port = value()?.parse().map_err(|e| format!("--port: {e}"))?,
            "--require-key" => config.require_keys.push(value()?),
            "--model" => models.push(value()?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if let Some(keys) = mock_keys {
        config.require_keys.extend(
            keys.split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(String::from),
        );
    }
    if !models.is_empty() {
        config.models = models;
    }
    config.addr = SocketAddr::new(ip, port);
    Ok(config)
}

/// Entry point of the binary.
pub fn main<I: IntoIterator<Item = String>>(args: I) -> ExitCode {
    let keys = std::env::var("MOCK_KEYS").ok();
    let config = match parse_args(args, keys.as_deref()) {
        Ok(c) => c,
        Err(e) if e.is_empty() => {
            let _ = writeln!(std::io::stdout(), "{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "mock-upstream: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "mock-upstream: cannot start the runtime: {e}"
            );
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let handle = match spawn(config).await {
            Ok(h) => h,
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "mock-upstream: cannot bind: {e}");
                return ExitCode::FAILURE;
            }
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "LISTENING {}", handle.base_url());
        let _ = out.flush();
        drop(out);
        shutdown_signal().await;
        handle.shutdown().await;
        ExitCode::SUCCESS
    })
}

#[cfg(unix)]
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn shutdown_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flags_and_env() {
        let args = [
            "--port",
            "8081",
            "--require-key=a",
            "--require-key",
            "b",
            "--addr",
            "0.0.0.0",
        ];
        let c = parse_args(args.map(String::from), Some("c, d")).unwrap();
        assert_eq!(c.addr, "0.0.0.0:8081".parse().unwrap());
        assert_eq!(c.require_keys, ["a", "b", "c", "d"]);
        assert!(parse_args(["--bogus".to_string()], None).is_err());
    }
}
