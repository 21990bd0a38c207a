//! The container health check: services built `FROM scratch` have no shell and no
//! curl, so each binary probes its own `/health` with a plain HTTP/1.0 request.

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
    let addr = SocketAddr::new(ip, listen.port());
    let fail = |e: std::io::Error| format!("GET http://{addr}/health: {e}");
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(fail)?;
    stream.set_read_timeout(Some(timeout)).map_err(fail)?;
    stream.set_write_timeout(Some(timeout)).map_err(fail)?;
    write!(stream, "GET /health HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(fail)?;
    let mut status_line = String::new();
    BufReader::new(stream).read_line(&mut status_line).map_err(fail)?;
    match status_line.split_whitespace().nth(1) {
        Some("200") => Ok(()),
        _ => Err(format!("GET http://{addr}/health answered {:?}", status_line.trim_end())),
    }
}
