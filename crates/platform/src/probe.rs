//! Container health checks: images built `FROM scratch` have no shell and no curl, so
//! each binary probes its own `/health` with an HTTP/1.0 request (over TLS when it serves
//! TLS), and the `http-probe` binary does the same for the other images (Prometheus,
//! Alertmanager, exporters).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use crate::tls::ServerTls;

/// GETs `/health` on the service listening at `listen` (a wildcard address is probed on
/// loopback), over TLS when it serves `tls`; `Ok` on a 200.
pub fn health(listen: SocketAddr, tls: Option<&ServerTls>, timeout: Duration) -> Result<(), String> {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let addr = SocketAddr::new(ip, listen.port());
    match tls {
        None => get(addr, "/health", timeout),
        Some(tls) => {
            let url = format!("https://{addr}/health");
            let stream = connect(addr, timeout).map_err(|e| format!("GET {url}: {e}"))?;
            let name = rustls::pki_types::ServerName::from(ip);
            let connection = rustls::ClientConnection::new(Arc::new(tls.own_client_config()), name)
                .map_err(|e| format!("GET {url}: {e}"))?;
            exchange(rustls::StreamOwned::new(connection, stream), &url, addr, "/health")
        }
    }
}

/// GETs `path` from `addr`; `Ok` on any 2xx.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(), String> {
    let url = format!("http://{addr}{path}");
    let stream = connect(addr, timeout).map_err(|e| format!("GET {url}: {e}"))?;
    exchange(stream, &url, addr, path)
}

fn connect(addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    Ok(stream)
}

fn exchange(mut stream: impl Read + Write, url: &str, addr: SocketAddr, path: &str) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("GET {url}: {e}");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(fail)?;
    stream.flush().map_err(fail)?;
    let mut status_line = String::new();
    BufReader::new(stream).read_line(&mut status_line).map_err(fail)?;
    match status_line.split_whitespace().nth(1) {
        Some(code) if code.len() == 3 && code.starts_with('2') => Ok(()),
        _ => Err(format!("GET {url} answered {:?}", status_line.trim_end())),
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
pub fn exit_code(listen: SocketAddr, tls: Option<&ServerTls>) -> std::process::ExitCode {
    report(health(listen, tls, Duration::from_secs(3)))
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
