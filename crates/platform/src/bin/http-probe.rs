//! `http-probe http://IP:PORT/PATH`: exit 0 if the URL answers 2xx within 3 s. The
//! HEALTHCHECK of images that have no shell and no curl.

use std::process::ExitCode;
use std::time::Duration;

use flowforge_platform::probe;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url] = args.as_slice() else {
        eprintln!("usage: http-probe http://IP:PORT/PATH");
        return ExitCode::from(2);
    };
    probe::report(probe::parse_url(url).and_then(|(addr, path)| probe::get(addr, &path, Duration::from_secs(3))))
}
