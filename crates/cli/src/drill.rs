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
    /// After a restore: which of a load run's acknowledged tasks came back, and the
    /// recovery point (newest acknowledged − newest restored); exit 1 past --within.
    Rpo(RpoArgs),
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

#[derive(clap::Args)]
pub struct RpoArgs {
    /// The acknowledged task ids `flowforge load --ids-out` wrote.
    #[arg(long)]
    ids: PathBuf,
    /// The summary `flowforge load` printed (its `last_acknowledged_at`).
    #[arg(long)]
    summary: PathBuf,
    /// The most that may be lost, as time.
    #[arg(long, default_value = "15s")]
    within: HumanDuration,
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
            let (ids, summary) = read_run(&args.ids, &args.summary)?;
            let verdict = verdict(db, &ids, &summary, args.allow_retry, args.wait.0).await?;
            report(&verdict, &verdict.line, verdict.ok, args.json)
        }
        DrillCommand::Rpo(args) => {
            let (ids, summary) = read_run(&args.ids, &args.summary)?;
            let restored = Queue::new(db.clone()).get_many(&ids).await?;
            let newest = restored.iter().map(|t| epoch(t.created_at)).reduce(f64::max);
            let point = recovery_point(ids.len() as u64, restored.len() as u64, &summary, newest, args.within.0);
            report(&point, &point.line, point.ok, args.json)
        }
    }
}

fn read_run(ids: &PathBuf, summary: &PathBuf) -> anyhow::Result<(Vec<i64>, Value)> {
    let summary = serde_json::from_str(&std::fs::read_to_string(summary).context("reading --summary")?)
        .context("--summary is not JSON")?;
    Ok((parse_ids(&std::fs::read_to_string(ids).context("reading --ids")?)?, summary))
}

fn report(outcome: &impl Serialize, line: &str, ok: bool, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string(outcome)?);
    } else {
        println!("{line}");
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn epoch(t: chrono::DateTime<chrono::Utc>) -> f64 {
    t.timestamp_micros() as f64 / 1e6
}

#[derive(Debug, Serialize)]
pub struct RecoveryPoint {
    pub acknowledged: u64,
    pub restored: u64,
    pub lost: u64,
    /// Seconds between the newest acknowledged write and the newest restored one; None when
    /// nothing came back.
    pub rpo_seconds: Option<f64>,
    pub ok: bool,
    pub line: String,
}

fn recovery_point(
    acknowledged: u64,
    restored: u64,
    summary: &Value,
    newest_restored: Option<f64>,
    within: Duration,
) -> RecoveryPoint {
    let rpo_seconds = match (summary["last_acknowledged_at"].as_f64(), newest_restored) {
        (Some(acked), Some(restored)) => Some((acked - restored).max(0.0)),
        // Nothing acknowledged: nothing to lose.
        (None, _) => Some(0.0),
        (Some(_), None) => None,
    };
    let lost = acknowledged.saturating_sub(restored);
    let shown = rpo_seconds.map_or_else(|| "unknown (nothing restored)".to_owned(), |s| format!("{s:.1} s"));
    RecoveryPoint {
        acknowledged,
        restored,
        lost,
        rpo_seconds,
        ok: rpo_seconds.is_some_and(|s| s <= within.as_secs_f64()),
        line: format!(
            "{acknowledged} acknowledged, {restored} restored, {lost} lost; RPO {shown} (newest acknowledged − newest restored)"
        ),
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
    /// When the last of the run's tasks completed (seconds since the Unix epoch): the end
    /// of a recovery.
    pub last_completed_at: Option<f64>,
    pub ok: bool,
    pub line: String,
}

/// What happened to the tasks of one run, as the database has them now.
#[derive(Debug, Default, PartialEq)]
struct Outcome {
    completed: u64,
    ran_again: u64,
    last_completed_at: Option<f64>,
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
    let mut outcome = loop {
        let outcome = outcome(&queue, ids).await?;
        if outcome.completed == ids.len() as u64 || Instant::now() >= deadline {
            break outcome;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // Counted once the waiting is over: the counter only grows while tasks complete.
    outcome.counted = counted(db, ids).await?;
    Ok(judge(ids.len() as u64, summary, &outcome, allow_retry))
}

/// The run's tasks as they are now (their completions not yet counted).
async fn outcome(queue: &Queue, ids: &[i64]) -> anyhow::Result<Outcome> {
    let mut completed = 0;
    let mut ran_again = 0;
    let mut last_completed_at = None;
    for chunk in ids.chunks(10_000) {
        for task in queue.get_many(chunk).await? {
            if task.status == TaskStatus::Completed {
                completed += 1;
                last_completed_at = last_completed_at.max(task.completed_at);
                if task.attempts > 1 {
                    ran_again += 1;
                }
            }
        }
    }
    Ok(Outcome { completed, ran_again, last_completed_at: last_completed_at.map(epoch), counted: None })
}

/// (tasks completed more than once, tasks with a completion counted), if the counter is
/// installed.
async fn counted(db: &PgPool, ids: &[i64]) -> anyhow::Result<Option<(u64, u64)>> {
    let counter: bool = sqlx::query_scalar("SELECT to_regclass('drill_completions') IS NOT NULL").fetch_one(db).await?;
    if !counter {
        return Ok(None);
    }
    let (twice, counted): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE n > 1), count(*) FROM
                 (SELECT count(*) AS n FROM drill_completions WHERE task_id = ANY($1) GROUP BY task_id) c",
    )
    .bind(ids)
    .fetch_one(db)
    .await?;
    Ok(Some((twice as u64, counted as u64)))
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
        last_completed_at: outcome.last_completed_at,
        ok: lost == 0 && once_each && requests_ok,
        line,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The run's tasks as the database has them: completed, ran again, completions counted.
    fn tasks(completed: u64, ran_again: u64, counted: Option<(u64, u64)>) -> Outcome {
        Outcome { completed, ran_again, last_completed_at: None, counted }
    }

    fn summary(failed: u64, told_to_retry: u64) -> Value {
        json!({"sent": 100, "failed": failed, "told_to_retry": told_to_retry, "failure_kinds": ["timeout"],
               "latency_ms": {"max": 12.6}})
    }

    #[test]
    fn a_clean_run_passes_and_says_what_it_counted() {
        let v = judge(90, &summary(0, 0), &tasks(90, 3, Some((0, 90))), false);
        assert!(v.ok, "{v:?}");
        assert_eq!((v.lost, v.slowest_ms, v.completed_twice), (0, 13, Some(0)));
        assert!(v.line.contains("90 tasks: 0 lost, 0 completed twice (90 counted), 3 ran again"), "{}", v.line);
    }

    #[test]
    fn a_lost_task_a_double_completion_or_an_unseen_completion_fails() {
        let lost = judge(90, &summary(0, 0), &tasks(89, 0, Some((0, 89))), false);
        assert!(!lost.ok && lost.lost == 1);
        let twice = judge(90, &summary(0, 0), &tasks(90, 0, Some((1, 90))), false);
        assert!(!twice.ok);
        // A counter that missed completions proves nothing.
        let unseen = judge(90, &summary(0, 0), &tasks(90, 0, Some((0, 80))), false);
        assert!(!unseen.ok);
        let uncounted = judge(90, &summary(0, 0), &tasks(90, 0, None), false);
        assert!(uncounted.ok && uncounted.line.contains("completions not counted"));
    }

    #[test]
    fn retry_answers_fail_a_run_unless_the_drill_allows_them() {
        let all_done = tasks(90, 0, None);
        assert!(!judge(90, &summary(0, 5), &all_done, false).ok);
        assert!(judge(90, &summary(0, 5), &all_done, true).ok);
        assert!(!judge(90, &summary(1, 0), &all_done, true).ok);
    }

    #[test]
    fn the_recovery_point_is_the_gap_between_the_newest_acknowledged_and_restored_writes() {
        let summary = json!({"last_acknowledged_at": 1000.0});
        let within = Duration::from_secs(15);
        let point = recovery_point(40, 37, &summary, Some(992.5), within);
        assert_eq!((point.lost, point.rpo_seconds, point.ok), (3, Some(7.5), true), "{}", point.line);
        assert!(!recovery_point(40, 20, &summary, Some(980.0), within).ok, "20 s is past 15 s");
        let nothing_back = recovery_point(40, 0, &summary, None, within);
        assert!(!nothing_back.ok && nothing_back.line.contains("unknown"), "{}", nothing_back.line);
        assert!(recovery_point(0, 0, &json!({"last_acknowledged_at": null}), None, within).ok);
    }

    #[test]
    fn ids_files_are_parsed_strictly() {
        assert_eq!(parse_ids("1\n2\n\n3\n").unwrap(), vec![1, 2, 3]);
        let e = parse_ids("1\nx\n").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
    }
}
