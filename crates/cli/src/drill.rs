//! `flowforge drill`: the verdict of a failure drill on the tasks a `flowforge load` run
//! created. What a client and an operator would count:
//!   lost             acknowledged (201) by the API, never completed;
//!   completed twice  a completion recorded more than once for one task (counted by a
//!                    trigger `drill counter install` adds: every write into `completed`);
//!   ran again        completed on a later attempt because the worker running it died
//!                    (at-least-once execution: not an error, but a number to know);
//!   failed           requests answered with anything but 201, or 503/429 with
//!                    Retry-After where the drill allows it; timeouts count as failed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use flowforge_platform::config::HumanDuration;
use flowforge_queue::{Queue, TaskStatus};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;

#[derive(clap::Subcommand)]
pub enum DrillCommand {
    /// Count every write that sets a task `completed`, so that a verdict can tell tasks
    /// completed twice (`install` is idempotent; `remove` drops the trigger and its table).
    Counter {
        #[arg(value_enum)]
        action: CounterAction,
    },
    /// Wait (bounded) until every task a load run created has completed, then count what
    /// happened to them; exit 1 if a task was lost or completed twice, or a request failed.
    Verdict(VerdictArgs),
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum CounterAction {
    Install,
    Remove,
}

#[derive(clap::Args)]
pub struct VerdictArgs {
    /// The acknowledged task ids `flowforge load --ids-out` wrote.
    #[arg(long)]
    ids: PathBuf,
    /// The summary `flowforge load` printed.
    #[arg(long)]
    summary: PathBuf,
    /// 503 or 429 with Retry-After is an answer, not a failure (outage drills).
    #[arg(long)]
    allow_retry: bool,
    /// Longest wait for the tasks to complete.
    #[arg(long, default_value = "120s")]
    wait: HumanDuration,
    /// One JSON object instead of a line of text.
    #[arg(long)]
    json: bool,
}

/// The trigger is a test instrument on the queue's table: SECURITY DEFINER so that the
/// app role's completions can write to the owner's table.
const INSTALL_COUNTER: &str = r#"
CREATE TABLE IF NOT EXISTS drill_completions (task_id bigint NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE OR REPLACE FUNCTION drill_count_completion() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
    INSERT INTO drill_completions (task_id) VALUES (NEW.id);
    RETURN NULL;
END
$$;
CREATE OR REPLACE TRIGGER drill_count_completion AFTER UPDATE OF status ON tasks FOR EACH ROW
    WHEN (NEW.status = 'completed') EXECUTE FUNCTION drill_count_completion();
"#;

const REMOVE_COUNTER: &str = r#"
DROP TRIGGER IF EXISTS drill_count_completion ON tasks;
DROP FUNCTION IF EXISTS drill_count_completion();
DROP TABLE IF EXISTS drill_completions;
"#;

pub async fn run(db: &PgPool, command: DrillCommand) -> anyhow::Result<ExitCode> {
    match command {
        DrillCommand::Counter { action } => {
            let sql = match action {
                CounterAction::Install => INSTALL_COUNTER,
                CounterAction::Remove => REMOVE_COUNTER,
            };
            sqlx::raw_sql(sql).execute(db).await?;
            Ok(ExitCode::SUCCESS)
        }
        DrillCommand::Verdict(args) => {
            let summary: Value =
                serde_json::from_str(&std::fs::read_to_string(&args.summary).context("reading --summary")?)
                    .context("--summary is not JSON")?;
            let ids = parse_ids(&std::fs::read_to_string(&args.ids).context("reading --ids")?)?;
            let verdict = verdict(db, &ids, &summary, args.allow_retry, args.wait.0).await?;
            if args.json {
                println!("{}", serde_json::to_string(&verdict)?);
            } else {
                println!("{}", verdict.line);
            }
            Ok(if verdict.ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

fn parse_ids(text: &str) -> anyhow::Result<Vec<i64>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(n, l)| l.trim().parse().with_context(|| format!("--ids line {}: not a task id", n + 1)))
        .collect()
}

#[derive(Debug, Serialize)]
pub struct Verdict {
    pub sent: u64,
    pub failed: u64,
    pub told_to_retry: u64,
    pub failure_kinds: Vec<String>,
    pub slowest_ms: u64,
    pub acknowledged: u64,
    pub completed: u64,
    pub lost: u64,
    /// None without the counter.
    pub completed_twice: Option<u64>,
    pub completions_counted: Option<u64>,
    pub ran_again: u64,
    pub ok: bool,
    pub line: String,
}

/// What happened to the tasks of one run, as the database has them now.
#[derive(Debug, Default, PartialEq)]
struct Outcome {
    completed: u64,
    ran_again: u64,
    /// (tasks completed more than once, tasks with a completion counted)
    counted: Option<(u64, u64)>,
}

async fn verdict(
    db: &PgPool,
    ids: &[i64],
    summary: &Value,
    allow_retry: bool,
    wait: Duration,
) -> anyhow::Result<Verdict> {
    let queue = Queue::new(db.clone());
    let deadline = Instant::now() + wait;
    let outcome = loop {
        let outcome = outcome(db, &queue, ids).await?;
        if outcome.completed == ids.len() as u64 || Instant::now() >= deadline {
            break outcome;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    Ok(judge(ids.len() as u64, summary, &outcome, allow_retry))
}

async fn outcome(db: &PgPool, queue: &Queue, ids: &[i64]) -> anyhow::Result<Outcome> {
    let mut completed = 0;
    let mut ran_again = 0;
    for chunk in ids.chunks(10_000) {
        for task in queue.get_many(chunk).await? {
            if task.status == TaskStatus::Completed {
                completed += 1;
                if task.attempts > 1 {
                    ran_again += 1;
                }
            }
        }
    }
    let counter: bool = sqlx::query_scalar("SELECT to_regclass('drill_completions') IS NOT NULL").fetch_one(db).await?;
    let counted = if counter {
        let (twice, counted): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE n > 1), count(*) FROM
                 (SELECT count(*) AS n FROM drill_completions WHERE task_id = ANY($1) GROUP BY task_id) c",
        )
        .bind(ids)
        .fetch_one(db)
        .await?;
        Some((twice as u64, counted as u64))
    } else {
        None
    };
    Ok(Outcome { completed, ran_again, counted })
}

fn judge(acknowledged: u64, summary: &Value, outcome: &Outcome, allow_retry: bool) -> Verdict {
    let number = |key: &str| summary[key].as_u64().unwrap_or(0);
    let (sent, failed, told_to_retry) = (number("sent"), number("failed"), number("told_to_retry"));
    let slowest_ms = summary["latency_ms"]["max"].as_f64().unwrap_or(0.0).round() as u64;
    let failure_kinds = summary["failure_kinds"]
        .as_array()
        .map(|kinds| kinds.iter().filter_map(|k| k.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    let lost = acknowledged.saturating_sub(outcome.completed);
    let requests_ok = failed == 0 && (allow_retry || told_to_retry == 0);
    // The counter must have seen every completion for its zero to mean anything.
    let once_each = outcome.counted.is_none_or(|(twice, counted)| twice == 0 && counted == outcome.completed);
    let twice = match outcome.counted {
        Some((twice, counted)) => format!("{twice} completed twice ({counted} counted)"),
        None => "completions not counted".to_owned(),
    };
    let line = format!(
        "{sent} requests: {failed} failed, {told_to_retry} told to retry (503/429 + Retry-After), slowest {slowest_ms} ms \
         | {acknowledged} tasks: {lost} lost, {twice}, {} ran again",
        outcome.ran_again
    );
    Verdict {
        sent,
        failed,
        told_to_retry,
        failure_kinds,
        slowest_ms,
        acknowledged,
        completed: outcome.completed,
        lost,
        completed_twice: outcome.counted.map(|c| c.0),
        completions_counted: outcome.counted.map(|c| c.1),
        ran_again: outcome.ran_again,
        ok: lost == 0 && once_each && requests_ok,
        line,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn summary(failed: u64, told_to_retry: u64) -> Value {
        json!({"sent": 100, "failed": failed, "told_to_retry": told_to_retry, "failure_kinds": ["timeout"],
               "latency_ms": {"max": 12.6}})
    }

    #[test]
    fn a_clean_run_passes_and_says_what_it_counted() {
        let v = judge(90, &summary(0, 0), &Outcome { completed: 90, ran_again: 3, counted: Some((0, 90)) }, false);
        assert!(v.ok, "{v:?}");
        assert_eq!((v.lost, v.slowest_ms, v.completed_twice), (0, 13, Some(0)));
        assert!(v.line.contains("90 tasks: 0 lost, 0 completed twice (90 counted), 3 ran again"), "{}", v.line);
    }

    #[test]
    fn a_lost_task_a_double_completion_or_an_unseen_completion_fails() {
        let lost = judge(90, &summary(0, 0), &Outcome { completed: 89, ran_again: 0, counted: Some((0, 89)) }, false);
        assert!(!lost.ok && lost.lost == 1);
        let twice = judge(90, &summary(0, 0), &Outcome { completed: 90, ran_again: 0, counted: Some((1, 90)) }, false);
        assert!(!twice.ok);
        // A counter that missed completions proves nothing.
        let unseen = judge(90, &summary(0, 0), &Outcome { completed: 90, ran_again: 0, counted: Some((0, 80)) }, false);
        assert!(!unseen.ok);
        let uncounted = judge(90, &summary(0, 0), &Outcome { completed: 90, ran_again: 0, counted: None }, false);
        assert!(uncounted.ok && uncounted.line.contains("completions not counted"));
    }

    #[test]
    fn retry_answers_fail_a_run_unless_the_drill_allows_them() {
        let all_done = Outcome { completed: 90, ran_again: 0, counted: None };
        assert!(!judge(90, &summary(0, 5), &all_done, false).ok);
        assert!(judge(90, &summary(0, 5), &all_done, true).ok);
        assert!(!judge(90, &summary(1, 0), &all_done, true).ok);
    }

    #[test]
    fn ids_files_are_parsed_strictly() {
        assert_eq!(parse_ids("1\n2\n\n3\n").unwrap(), vec![1, 2, 3]);
        let e = parse_ids("1\nx\n").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
    }
}
