//! OTLP export, against a stand-in collector on a loopback port: with
//! FLOWFORGE_OTLP_ENDPOINT set, spans reach `/v1/traces` as protobuf, in the W3C trace
//! the request (or task) came with.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::time::Duration;

use flowforge_platform::telemetry::{self, TelemetrySettings};
use flowforge_platform::Source;

/// Accepts HTTP/1.1 requests, answers 200, and passes on (path, body) of each.
fn collector() -> (SocketAddr, mpsc::Receiver<(String, Vec<u8>)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut stream = stream;
                loop {
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                        return;
                    }
                    let path = request_line.split_whitespace().nth(1).unwrap_or("").to_string();
                    let mut length = 0;
                    loop {
                        let mut header = String::new();
                        reader.read_line(&mut header).unwrap();
                        if header == "\r\n" {
                            break;
                        }
                        if let Some((name, value)) = header.split_once(':') {
                            if name.eq_ignore_ascii_case("content-length") {
                                length = value.trim().parse().unwrap();
                            }
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").unwrap();
                    let _ = tx.send((path, body));
                }
            });
        }
    });
    (addr, rx)
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn spans_are_exported_over_otlp_in_the_callers_trace() {
    let (addr, received) = collector();
    let mut source = Source::from_vars([("FLOWFORGE_OTLP_ENDPOINT".to_string(), format!("http://{addr}/"))]);
    let settings = TelemetrySettings::from_source(&mut source);
    source.finish().expect("valid settings");
    telemetry::init("otlp-test", &settings);

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let span = tracing::info_span!("request", route = "/tasks");
    flowforge_queue::trace::continue_trace(&span, trace_id);
    span.in_scope(|| tracing::info!("inside the request"));
    drop(span);
    telemetry::flush();

    let (path, body) = received.recv_timeout(Duration::from_secs(10)).expect("the collector got an export");
    assert_eq!(path, "/v1/traces");
    let contains = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    assert!(contains(&hex_bytes(trace_id)), "the span carries the caller's trace id");
    assert!(contains(b"otlp-test"), "service.name is the service");
    assert!(contains(b"request"), "the span's name");
}

#[test]
fn only_plain_http_collectors_are_accepted() {
    let mut source = Source::from_vars([("FLOWFORGE_OTLP_ENDPOINT".to_string(), "https://collector:4318".to_string())]);
    let _ = TelemetrySettings::from_source(&mut source);
    let error = source.finish().expect_err("https is refused").to_string();
    assert!(error.contains("FLOWFORGE_OTLP_ENDPOINT"), "{error}");
}
