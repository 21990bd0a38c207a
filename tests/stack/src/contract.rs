//! The API against its own OpenAPI document, as a client sees it: Schemathesis through the
//! proxy, every check, as a user with a token of its own. Two passes: signing in makes a
//! cookie session that Schemathesis keeps for every later request, which would turn its
//! requests without credentials into requests with them; so the session's operations
//! run on their own, after the rest.
//!
//! Schemathesis sends many requests without credentials from one address, and expects
//! 401 to each (it does not take 429 as a refusal): the per-address refusal limits, and
//! the user's rate limit, are raised out of its way while it runs, then put back.

use std::path::Path;

use serde_json::json;

use crate::harness::{Checks, Stack};
use crate::Scenario;

pub const SCENARIOS: &[(&str, Scenario)] = &[("contract::schemathesis", schemathesis)];

/// Examples per operation and phase: about 3,250 test cases over both passes, each one
/// request or more.
const EXAMPLES: &str = "10";

/// The limits in the way, raised.
const UNLIMITED: &[(&str, &str)] = &[
    ("FLOWFORGE_AUTH_FAILURES_PER_MINUTE", "1000000"),
    ("FLOWFORGE_PROXY_REFUSALS_PER_MINUTE", "1000000"),
    ("FLOWFORGE_RATE_LIMIT_PER_MINUTE", "1000000"),
];

fn schemathesis(stack: &Stack, checks: &mut Checks) -> anyhow::Result<()> {
    let name = format!("contract{}", std::process::id());
    let user = stack.post("/api/v1/users", &json!({"name": name}))?;
    let token = user.body["data"]["token"]["token"].as_str().unwrap_or_default().to_owned();
    checks.check("limits raised for the run", stack.step_with_env("contract-limits", UNLIMITED, ["up"]));
    let passes = run_passes(stack, &token, checks);
    checks.check("limits put back", stack.step("contract-limits-back", ["up"]));
    passes
}

fn run_passes(stack: &Stack, token: &str, checks: &mut Checks) -> anyhow::Result<()> {
    for (label, selection) in
        [("every operation but the session's", "--exclude-tag"), ("the session's", "--include-tag")]
    {
        let (passed, text) = run_schemathesis(stack, token, &[selection, "session"])?;
        // The summary, and on failure each failing operation with what it got.
        for line in text.lines().map(str::trim) {
            let failing = line.starts_with("___") || line.starts_with("- ST") || line.starts_with("curl ");
            let answer = line.starts_with('[') || line.starts_with("Received") || line.starts_with("Documented");
            if failing || answer || line.contains("generated") || line.starts_with("❌") {
                println!("     {line}");
            }
        }
        checks.check(
            format!("Schemathesis on {label}: every check, {EXAMPLES} examples per operation and phase, no failure"),
            passed,
        );
    }
    Ok(())
}

fn run_schemathesis(stack: &Stack, token: &str, selection: &[&str]) -> anyhow::Result<(bool, String)> {
    let ca = stack.secrets.join("ca.pem");
    let config = Path::new("tests/stack/schemathesis.toml");
    let out = std::process::Command::new("schemathesis")
        .args(["--config-file", &config.display().to_string(), "run", &format!("{}/openapi.json", stack.base)])
        // Every check is on by default. Naming them here (`--checks all`) would also turn
        // back on the ones the config turns off for a single operation.
        .args(["--max-examples", EXAMPLES, "--seed", "1"])
        .args(["--tls-verify", &ca.display().to_string()])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(selection)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let passed = out.status.success() && text.contains(" passed") && !text.contains("FAILURES");
    Ok((passed, text))
}
