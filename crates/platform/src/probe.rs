//! Container health checks: images built `FROM scratch` have no shell and no curl, so
//! each binary probes its own `/health` with a plain HTTP/1.0 request, and the
//! `http-probe` binary does the same for the other images (Prometheus, Alertmanager,
//! exporters).

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// GETs `/health` on the service listening at `listen` (a wildcard address is probed on
/// loopback); `Ok` on a 200.
pub fn health(listen: SocketAddr, timeout: Duration) -> Result<(), String> {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    get(SocketAddr::new(ip, listen.port()), "/health", timeout)
}

/// GETs `path` from `addr`; `Ok` on any 2xx.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("GET http://{addr}{path}: {e}");
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(fail)?;
    stream.set_read_timeout(Some(timeout)).map_err(fail)?;
    stream.set_write_timeout(Some(timeout)).map_err(fail)?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(fail)?;
    let mut status_line = String::new();
    BufReader::new(stream).read_line(&mut status_line).map_err(fail)?;
    match status_line.split_whitespace().nth(1) {
        Some(code) if code.len() == 3 && code.starts_with('2') => Ok(()),
        _ => Err(format!("GET http://{addr}{path} answered {:?}", status_line.trim_end())),
    }
}

/// Splits `http://IP:PORT/PATH` (the only form `http-probe` takes: no DNS, no TLS).
pub fn parse_url(url: &str) -> Result<(SocketAddr, String), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("{url:?}: expected http://IP:PORT/PATH"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = authority.parse().map_err(|e| format!("{url:?}: {authority:?} is not IP:PORT ({e})"))?;
    Ok((addr, path.to_string()))
}

/// [`health`] as a process exit code, for the `healthcheck` subcommand of each binary.
pub fn exit_code(listen: SocketAddr) -> std::process::ExitCode {
    report(health(listen, Duration::from_secs(3)))
}

pub fn report(result: Result<(), String>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("unhealthy: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_probe_urls() {
        let (addr, path) = parse_url("http://127.0.0.1:9090/-/healthy").unwrap();
        assert_eq!(addr, "127.0.0.1:9090".parse().unwrap());
        assert_eq!(path, "/-/healthy");
        assert_eq!(parse_url("http://127.0.0.1:80").unwrap().1, "/");
        assert!(parse_url("https://127.0.0.1:80/").is_err());
        assert!(parse_url("http://localhost:80/").is_err());
    }
}
