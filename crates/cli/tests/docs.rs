//! The docs against the code, so they cannot drift: every command in a fenced shell block
//! of README.md and docs/ (and every inline `flowforge …` or `scripts/stack.sh …`) names a `scripts/stack.sh` subcommand, a script, or a
//! `flowforge` subcommand and flags that exist; and every `FLOWFORGE_*` variable the code
//! reads is in docs/configuration.md.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Files under `dir` (recursively) whose names end with one of `suffixes`.
fn files(dir: &Path, suffixes: &[&str]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return found };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if path.is_dir() && !["target", "node_modules", ".git"].contains(&name) {
            found.extend(files(&path, suffixes));
        } else if suffixes.iter().any(|s| name.ends_with(s)) {
            found.push(path);
        }
    }
    found
}

/// README.md and every page under docs/.
fn pages() -> Vec<PathBuf> {
    let root = repo();
    let mut pages = vec![root.join("README.md")];
    pages.extend(files(&root.join("docs"), &[".md"]));
    pages
}

/// The lines of fenced `sh`/`bash`/`shell`/`console` blocks, continuations joined.
fn shell_lines(markdown: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut fence: Option<bool> = None;
    let mut pending = String::new();
    for line in markdown.lines() {
        if let Some(info) = line.trim_start().strip_prefix("```") {
            fence = match fence {
                None => Some(["sh", "bash", "shell", "console"].contains(&info.trim())),
                Some(_) => None,
            };
            continue;
        }
        if fence != Some(true) {
            continue;
        }
        let line = line.trim().trim_start_matches("$ ");
        match line.strip_suffix('\\') {
            Some(start) => pending.push_str(start),
            None => {
                pending.push_str(line);
                lines.push(std::mem::take(&mut pending));
            }
        }
    }
    lines
}

/// Inline code spans that are commands of ours: `flowforge …` and `scripts/….sh …`.
fn inline_commands(markdown: &str) -> Vec<String> {
    let mut in_fence = false;
    let mut spans = Vec::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        for (i, span) in line.split('`').enumerate() {
            let ours = span.starts_with("flowforge ") || span.starts_with("scripts/stack.sh ");
            // `flowforge …` names the CLI, not a command.
            if i % 2 == 1 && ours && !span.contains('…') {
                spans.push(span.to_owned());
            }
        }
    }
    spans
}

/// The simple commands of a shell line: comments dropped, split at pipes, lists and
/// command substitutions, leading `NAME=value` assignments removed.
fn commands(line: &str) -> Vec<Vec<String>> {
    let code = match line.find(" #") {
        Some(i) => &line[..i],
        None if line.starts_with('#') => "",
        None => line,
    };
    code.replace("$(", ";")
        .replace([')', '|', '&'], ";")
        .split(';')
        .map(|part| {
            part.split_whitespace()
                .skip_while(|w| {
                    w.split_once('=')
                        .is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
                })
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|c| !c.is_empty())
        .collect()
}

fn flowforge_help(path: &[&str]) -> Option<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_flowforge")).args(path).arg("--help").output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Problems with a `flowforge` command line (the words after `flowforge`).
fn check_flowforge(words: &[String]) -> Vec<String> {
    let mut path: Vec<&str> = Vec::new();
    let mut help = flowforge_help(&[]).expect("flowforge --help");
    for w in words.iter().take_while(|w| !w.starts_with('-')) {
        let mut longer = path.clone();
        longer.push(w);
        match flowforge_help(&longer) {
            Some(h) if h != help => {
                path = longer;
                help = h;
            }
            _ => break,
        }
    }
    let mut problems = Vec::new();
    if path.is_empty() && !words.is_empty() {
        problems.push(format!("`flowforge {}`: no such subcommand", words[0]));
    }
    for flag in words.iter().filter(|w| w.starts_with("--")) {
        let flag = flag.split('=').next().unwrap_or_default().trim_end_matches(']');
        let known = help.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')).any(|w| w == flag);
        if !known {
            problems.push(format!("`flowforge {}` has no flag {flag}", path.join(" ")));
        }
    }
    problems
}

/// Problems with a `docker compose` command line (the words after `compose`): its
/// subcommand and flags must be in that subcommand's help (scripts/test.sh installs
/// Compose first). compose.yaml names its project, so bare commands reach the stack.
fn check_compose(words: &[String]) -> Vec<String> {
    let Some(sub) = words.iter().find(|w| !w.starts_with('-')) else { return Vec::new() };
    let out = Command::new("docker").args(["compose", sub, "--help"]).output();
    let Ok(out) = out.as_ref().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()) else {
        return vec!["no `docker compose` to check against: install it (scripts/stack.sh prepare)".into()];
    };
    if !out.contains(&format!("docker compose {sub}")) {
        return vec![format!("`docker compose {sub}`: no such subcommand")];
    }
    words
        .iter()
        .filter(|w| w.starts_with("--"))
        .map(|f| f.split('=').next().unwrap_or_default())
        .filter(|f| !out.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')).any(|w| w == *f))
        .map(|f| format!("`docker compose {sub}` has no flag {f}"))
        .collect()
}

/// The subcommands a script dispatches on: the arms of its `case "$command" in`, else of
/// its last `case "${1…}" in` (stack.sh looks at `$1` once before that, for other reasons).
fn subcommands(script: &str) -> BTreeSet<String> {
    let dispatch = match script.split_once("case \"$command\" in") {
        Some((_, rest)) => rest,
        None => script.rsplit_once("case \"${1").map_or("", |(_, rest)| rest),
    };
    dispatch
        .lines()
        .take_while(|l| l.trim() != "esac")
        .filter_map(|l| l.split_once(')').map(|(arms, _)| arms))
        .filter(|arms| {
            arms.split('|')
                .all(|a| !a.trim().is_empty() && a.trim().chars().all(|c| c.is_ascii_lowercase() || c == '-'))
        })
        .flat_map(|arms| arms.split('|').map(|a| a.trim().to_owned()))
        .collect()
}

/// `scripts/stack.sh`'s subcommands, and the text its flags must be in.
fn stack_script() -> (BTreeSet<String>, String) {
    let root = repo();
    let mut text = read(&root.join("scripts/stack.sh"));
    let subcommands = subcommands(&text);
    for lib in files(&root.join("scripts/lib"), &[".sh"]) {
        text.push_str(&read(&lib));
    }
    (subcommands, text)
}

/// A path to one of this repository's own programs.
fn is_ours(program: &str) -> bool {
    ["scripts/", "tests/", "deploy/", ".ci/"].iter().any(|dir| program.starts_with(dir))
}

fn check_command(words: &[String], stack: &(BTreeSet<String>, String)) -> Vec<String> {
    let root = repo();
    let program = words[0].as_str();
    let args = &words[1..];
    match program {
        "flowforge" => check_flowforge(args),
        "docker-compose" => vec!["`docker-compose` is Compose 1, which the stack does not support".into()],
        "docker" if args.first().map(String::as_str) == Some("compose") => check_compose(&args[1..]),
        "scripts/stack.sh" => {
            let (subcommands, text) = stack;
            let Some(sub) = args.first() else { return vec!["`scripts/stack.sh` without a subcommand".into()] };
            if !subcommands.contains(sub) {
                return vec![format!("`scripts/stack.sh {sub}`: no such subcommand")];
            }
            // What runs inside the stack's containers is checked like any command.
            if let Some(at) = args.iter().position(|w| w == "flowforge") {
                return check_flowforge(&args[at + 1..]);
            }
            // These hand their arguments on to Compose, psql or docker.
            if ["compose", "psql", "docker-build"].contains(&sub.as_str()) {
                return Vec::new();
            }
            args.iter()
                .filter(|w| w.starts_with("--"))
                .map(|f| f.split('=').next().unwrap_or_default().trim_matches(|c| c == '[' || c == ']'))
                .filter(|f| !text.contains(f))
                .map(|f| format!("`scripts/stack.sh {sub}` has no flag {f}"))
                .collect()
        }
        "python3" | "bash" => match args.first() {
            Some(script) if script.contains('/') && !root.join(script).is_file() => vec![format!("no file {script}")],
            _ => Vec::new(),
        },
        p if is_ours(p) => {
            let Ok(script) = std::fs::read_to_string(root.join(p)) else { return vec![format!("no file {p}")] };
            let known = subcommands(&script);
            match args.first() {
                Some(sub) if !known.is_empty() && !sub.starts_with('-') && !known.contains(sub) => {
                    vec![format!("`{p} {sub}`: no such subcommand (it has {known:?})")]
                }
                _ => Vec::new(),
            }
        }
        _ => Vec::new(),
    }
}

#[test]
fn every_command_in_the_docs_exists() {
    let stack = stack_script();
    assert!(stack.0.contains("up") && stack.0.contains("compose"), "stack.sh subcommands: {:?}", stack.0);
    let mut problems = Vec::new();
    let mut checked = 0;
    for page in pages() {
        let text = read(&page);
        for line in shell_lines(&text).into_iter().chain(inline_commands(&text)) {
            for words in commands(&line) {
                checked += 1;
                for p in check_command(&words, &stack) {
                    problems.push(format!("{}: {p}\n    {line}", page.strip_prefix(repo()).unwrap_or(&page).display()));
                }
            }
        }
    }
    assert!(checked > 20, "only {checked} commands found in the docs' shell blocks");
    assert!(
        problems.is_empty(),
        "{} commands in the docs do not match the code:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// The lines of a workflow step's `run:`, once for each value of the job's matrix it names.
fn expand_matrix(run: &str, matrix: &serde_norway::Value) -> Vec<String> {
    let mut lines = vec![run.to_owned()];
    for (key, values) in matrix.as_mapping().into_iter().flatten() {
        let (Some(key), Some(values)) = (key.as_str(), values.as_sequence()) else { continue };
        let placeholder = format!("${{{{ matrix.{key} }}}}");
        lines = lines
            .iter()
            .flat_map(|line| {
                let values: Vec<String> = values.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect();
                match line.contains(&placeholder) {
                    true => values.iter().map(|v| line.replace(&placeholder, v)).collect(),
                    false => vec![line.clone()],
                }
            })
            .collect();
    }
    lines.iter().flat_map(|run| run.lines().map(str::to_owned).collect::<Vec<_>>()).collect()
}

/// CI on GitHub runs what runs here: every `run:` step of .github/workflows calls scripts
/// of this repository that exist, with subcommands they have; and every action is pinned
/// to a commit, not a tag that can be moved.
#[test]
fn every_workflow_step_is_a_script_of_ours_and_every_action_is_pinned() {
    let root = repo();
    let stack = stack_script();
    let workflows = files(&root.join(".github/workflows"), &[".yml", ".yaml"]);
    // A set: a step that is wrong for every value of its matrix is reported once.
    let (mut problems, mut runs, mut actions) = (BTreeSet::new(), 0, 0);
    for file in &workflows {
        let name = file.strip_prefix(&root).unwrap_or(file).display().to_string();
        let workflow: serde_norway::Value =
            serde_norway::from_str(&read(file)).unwrap_or_else(|e| panic!("{name}: {e}"));
        for (job, spec) in workflow["jobs"].as_mapping().into_iter().flatten() {
            let job = job.as_str().unwrap_or_default();
            for step in spec["steps"].as_sequence().into_iter().flatten() {
                if let Some(action) = step["uses"].as_str() {
                    actions += 1;
                    let pinned = action.starts_with("./")
                        || action
                            .rsplit_once('@')
                            .is_some_and(|(_, r)| r.len() == 40 && r.chars().all(|c| c.is_ascii_hexdigit()));
                    if !pinned {
                        problems.insert(format!("{name}, job {job}: {action} is not pinned to a commit"));
                    }
                }
                let Some(run) = step["run"].as_str() else { continue };
                runs += 1;
                for line in expand_matrix(run, &spec["strategy"]["matrix"]) {
                    for words in commands(&line) {
                        if !is_ours(&words[0]) {
                            problems.insert(format!(
                                "{name}, job {job}: `{}` is not a script of this repository",
                                words[0]
                            ));
                        }
                        problems.extend(
                            check_command(&words, &stack).into_iter().map(|p| format!("{name}, job {job}: {p}")),
                        );
                    }
                }
            }
        }
    }
    assert!(
        workflows.len() >= 3 && runs >= 5 && actions >= 5,
        "{} workflows, {runs} run steps, {actions} actions",
        workflows.len()
    );
    let problems: Vec<String> = problems.into_iter().collect();
    assert!(problems.is_empty(), "{} problems in the workflows:\n{}", problems.len(), problems.join("\n"));
}

/// Every `FLOWFORGE_*` name in `text`, and every name a settings source reads with
/// the prefix left off (`parse_or("RATE_LIMIT_PER_MINUTE", …)`).
fn variables_in(text: &str, rust: bool) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let word = |s: &str| {
        s.chars().take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_').collect::<String>()
    };
    for (i, _) in text.match_indices("FLOWFORGE_") {
        let name = word(&text[i + "FLOWFORGE_".len()..]);
        if !name.is_empty() && !name.ends_with('_') {
            found.insert(name);
        }
    }
    if rust {
        for reader in ["parse_or(\"", "parse_dev_default(\"", "duration_or(\"", "required(\"", ".get(\""] {
            for (i, _) in text.match_indices(reader) {
                let name = word(&text[i + reader.len()..]);
                if name.len() > 2 && text[i + reader.len() + name.len()..].starts_with('"') {
                    found.insert(name);
                }
            }
        }
    }
    found
}

#[test]
fn every_variable_the_code_reads_is_documented() {
    let root = repo();
    let mut read_by_code = BTreeSet::new();
    for file in
        files(&root.join("crates"), &[".rs"]).into_iter().filter(|f| f.components().any(|c| c.as_os_str() == "src"))
    {
        // The code, not its comments or its unit tests' made-up settings.
        let text = read(&file);
        let code: String = text
            .split("#[cfg(test)]")
            .next()
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        read_by_code.extend(variables_in(&code, true));
    }
    let mut others = files(&root.join("scripts"), &[".sh"]);
    others.extend(files(&root.join("deploy"), &[".sh", "Dockerfile", ".cfg", ".yml", ".yaml"]));
    others.extend([root.join("compose.yaml"), root.join("compose.dev.yaml"), root.join(".ci/run")]);
    for file in others.into_iter().filter(|f| f.is_file()) {
        read_by_code.extend(variables_in(&read(&file), false));
    }
    assert!(read_by_code.contains("DATABASE_URL") && read_by_code.contains("RATE_LIMIT_PER_MINUTE"));
    let docs = read(&root.join("docs/configuration.md"));
    let documented = |name: &str| {
        docs.match_indices(name).any(|(i, _)| {
            let before = &docs[..i];
            let after = docs[i + name.len()..].chars().next().unwrap_or(' ');
            (before.ends_with('`') || before.ends_with("FLOWFORGE_") || before.ends_with("`FLOWFORGE_"))
                && !(after.is_ascii_uppercase() || after.is_ascii_digit() || after == '_')
        })
    };
    // `X_FILE` is documented with `X` (the settings that may come from a file, said once).
    let missing: Vec<&String> =
        read_by_code.iter().filter(|n| !documented(n) && !n.strip_suffix("_FILE").is_some_and(&documented)).collect();
    assert!(missing.is_empty(), "read by the code, not in docs/configuration.md: {missing:?}");
}

/// docs/backup.md's S3 repository, as Compose resolves it: the database (WAL archiving),
/// the backup service and the restore job all get the settings, the key and a network
/// out, because each writes pgBackRest's configuration for itself.
#[test]
fn the_s3_backup_settings_reach_every_container_that_runs_pgbackrest() {
    let root = repo();
    let single = s3_config(&["compose.yaml", "deploy/compose/backup-s3.yaml"]);
    assert_has_s3_repository(&single, &["postgres", "backup", "restore"]);
    // The cluster: every member archives and restores; the router holds no key.
    let cluster = s3_config(&[
        "compose.yaml",
        "deploy/compose/ha.yaml",
        "deploy/compose/backup-s3.yaml",
        "deploy/compose/ha-backup-s3.yaml",
    ]);
    assert_has_s3_repository(&cluster, &["pg1", "pg2", "pg3", "backup", "restore"]);
    let router = &cluster["services"]["postgres"];
    assert!(
        router["environment"].get("FLOWFORGE_BACKUP_REPO_TYPE").is_none(),
        "the router has the repository settings"
    );
    assert!(
        router["secrets"].as_array().is_none_or(|s| s.is_empty()),
        "the router holds secrets: {}",
        router["secrets"]
    );
    assert!(router["networks"].get("backup-storage").is_none(), "the router reaches the storage");
    let page = read(&root.join("docs/backup.md"));
    assert!(page.contains("deploy/compose/backup-s3.yaml"), "docs/backup.md names the S3 override");
}

/// `docker compose config` of these files with the S3 repository's settings, as JSON.
fn s3_config(files: &[&str]) -> serde_json::Value {
    let mut command = Command::new("docker");
    command.current_dir(repo()).arg("compose");
    for file in files {
        command.args(["-f", file]);
    }
    let out = command
        .args(["--profile", "restore", "config", "--format", "json"])
        .envs([
            ("FLOWFORGE_BACKUP_S3_BUCKET", "flowforge-backups"),
            ("FLOWFORGE_BACKUP_S3_ENDPOINT", "s3.example.net"),
            ("FLOWFORGE_BACKUP_S3_REGION", "eu-west-1"),
        ])
        .output()
        .expect("docker compose (scripts/stack.sh prepare installs it)");
    assert!(out.status.success(), "{files:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("compose config as JSON")
}

/// Each of `services` has the repository's settings, its key and a way out to it.
fn assert_has_s3_repository(config: &serde_json::Value, services: &[&str]) {
    for service in services {
        let s = &config["services"][service];
        assert_eq!(s["environment"]["FLOWFORGE_BACKUP_REPO_TYPE"], "s3", "{service}");
        for key in ["FLOWFORGE_BACKUP_S3_BUCKET", "FLOWFORGE_BACKUP_S3_ENDPOINT", "FLOWFORGE_BACKUP_S3_REGION"] {
            assert!(s["environment"][key].as_str().is_some_and(|v| !v.is_empty()), "{service} lacks {key}");
        }
        let secrets: Vec<&str> =
            s["secrets"].as_array().into_iter().flatten().filter_map(|x| x["source"].as_str()).collect();
        for secret in ["backup_s3_key", "backup_s3_key_secret", "backup_cipher_pass"] {
            assert!(secrets.contains(&secret), "{service} lacks the secret {secret}: {secrets:?}");
        }
        assert!(s["networks"].get("backup-storage").is_some(), "{service} has no way out to the storage");
        assert!(s["network_mode"].is_null(), "{service} is cut off from the network");
    }
}
