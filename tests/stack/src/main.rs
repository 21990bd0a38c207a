//! The container stack's system test, against the real Docker engine on this machine:
//! brings the stack up with `scripts/stack.sh`, breaks it on purpose, checks what a user
//! and an operator would check, and tears it down. Every wait is bounded; all traffic
//! stays on this machine (loopback and the stack's own networks).
//!
//! One trial per scenario, run in order on one stack (`--list` names them; a name filter
//! runs some alone, on a stack of their own). FLOWFORGE_STACK_KEEP=1 leaves the stack up
//! afterwards, and the next run reuses it.

mod abuse;
mod chaos;
mod contract;
mod defence;
mod dev;
mod edge;
mod harness;
mod images;
mod observability;
mod recovery;

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use harness::{Checks, Stack, FAILED, PASSED};
use libtest_mimic::{Arguments, Trial};

/// A scenario: its checks on the running stack. An error ends it as one more failure.
pub type Scenario = fn(&Stack, &mut Checks) -> anyhow::Result<()>;

/// Every scenario, in the order a full run takes them: the ones that take the stack down
/// or rebuild it come last.
fn scenarios() -> Vec<(&'static str, Scenario)> {
    [
        images::SCENARIOS,
        edge::SCENARIOS,
        observability::SCENARIOS,
        defence::SCENARIOS,
        recovery::SCENARIOS,
        chaos::SCENARIOS,
        abuse::SCENARIOS,
        contract::SCENARIOS,
        dev::SCENARIOS,
    ]
    .concat()
}

fn main() -> ExitCode {
    let mut args = Arguments::from_args();
    // One stack, one scenario at a time.
    args.test_threads = Some(1);
    if args.list {
        let trials = scenarios().into_iter().map(|(name, _)| Trial::test(name, || Ok(()))).collect();
        return libtest_mimic::run(&args, trials).exit_code();
    }
    // The scripts and files the scenarios use are named from the repository's root.
    if let Err(e) = std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")) {
        eprintln!("system-test: {e}");
        return ExitCode::FAILURE;
    }
    let mut stack = match Stack::configure() {
        Ok(stack) => stack,
        Err(e) => {
            eprintln!("system-test: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let keep = std::env::var("FLOWFORGE_STACK_KEEP").is_ok_and(|v| v == "1");
    let started = Instant::now();
    let up = stack.up();
    let mut checks = Checks::default();
    checks.check(format!("stack up and healthy in {} s", started.elapsed().as_secs()), up.is_ok());
    let stack = Arc::new(stack);
    let conclusion = match up {
        Ok(()) => {
            let trials = scenarios()
                .into_iter()
                .map(|(name, scenario)| {
                    let stack = Arc::clone(&stack);
                    Trial::test(name, move || {
                        // The harness has printed "test NAME ... " without a newline.
                        println!();
                        let mut checks = Checks::default();
                        let started = Instant::now();
                        let outcome = scenario(&stack, &mut checks);
                        // Where the stage's minutes go, scenario by scenario.
                        println!("     took {} s", harness::since(started));
                        checks.finish(outcome)
                    })
                })
                .collect();
            Some(libtest_mimic::run(&args, trials))
        }
        Err(e) => {
            println!("     {e:#}");
            None
        }
    };
    if !keep {
        dev::teardown(&stack, &mut checks);
    }
    println!("system: {} passed, {} failed", PASSED.load(Ordering::Relaxed), FAILED.load(Ordering::Relaxed));
    match conclusion {
        Some(c) if FAILED.load(Ordering::Relaxed) == 0 => c.exit_code(),
        _ => ExitCode::FAILURE,
    }
}
