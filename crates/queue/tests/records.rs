//! Tasks as records (list, read, lock, edit, delete) and the change feed's payloads,
//! against a real PostgreSQL.

use std::time::Duration;

use flowforge_queue::{
    DeleteOutcome, FeedChanges, NewTask, Outcome, PageKey, Queue, TaskEdit, TaskOrder, TaskQuery, TaskStatus,
    EVENTS_CHANNEL, MIGRATOR,
};
use flowforge_testkit::TestDb;
use serde_json::json;
use sqlx::postgres::PgListener;

async fn setup() -> (TestDb, Queue) {
    let db = TestDb::new(&[&MIGRATOR]).await;
    let queue = Queue::new(db.pool.clone());
    (db, queue)
}

fn task(title: &str, kind: &str, priority: i16, owner: i64) -> NewTask {
    NewTask { title: title.into(), priority, owner_id: Some(owner), ..NewTask::new(kind, json!({})) }
}

#[tokio::test]
async fn lists_filter_and_page_without_skipping_or_repeating() {
    let (_db, queue) = setup().await;
    let new: Vec<NewTask> = (0..30)
        .map(|i| task(&format!("t{i} {}", if i % 3 == 0 { "50%_off" } else { "plain" }), "a", (i % 4) as i16, i % 2))
        .collect();
    let created = queue.enqueue(&new).await.unwrap();
    for order in [TaskOrder::Newest, TaskOrder::Oldest, TaskOrder::HighestPriority, TaskOrder::LowestPriority] {
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = queue.list(&TaskQuery { order, after, limit: 7, ..Default::default() }).await.unwrap();
            seen.extend(page.iter().map(|t| (t.priority, t.id)));
            match page.last() {
                Some(last) if page.len() == 7 => after = Some(PageKey::of(last)),
                _ => break,
            }
        }
        let mut expected: Vec<(i16, i64)> = created.iter().map(|t| (t.priority, t.id)).collect();
        match order {
            TaskOrder::Newest => expected.sort_by_key(|&(_, id)| std::cmp::Reverse(id)),
            TaskOrder::Oldest => expected.sort_by_key(|&(_, id)| id),
            TaskOrder::HighestPriority => expected.sort_by(|a, b| b.cmp(a)),
            TaskOrder::LowestPriority => expected.sort(),
        }
        assert_eq!(seen, expected, "{order:?}");
    }
    let query = |q: TaskQuery| {
        let queue = queue.clone();
        async move { queue.list(&TaskQuery { limit: 100, ..q }).await.unwrap() }
    };
    assert_eq!(query(TaskQuery { owner_id: Some(1), ..Default::default() }).await.len(), 15);
    // `%` and `_` are taken literally.
    assert_eq!(query(TaskQuery { title_contains: Some("50%_OFF".into()), ..Default::default() }).await.len(), 10);
    assert_eq!(query(TaskQuery { title_contains: Some("%".into()), ..Default::default() }).await.len(), 10);
    assert_eq!(query(TaskQuery { kind: Some("b".into()), ..Default::default() }).await.len(), 0);
    let statuses = Some(vec![TaskStatus::Completed, TaskStatus::Failed]);
    assert_eq!(query(TaskQuery { statuses, ..Default::default() }).await.len(), 0);
    let ids = [created[3].id, created[1].id, i64::MAX];
    let many: Vec<i64> = queue.get_many(&ids).await.unwrap().iter().map(|t| t.id).collect();
    assert_eq!(many, [created[1].id, created[3].id]);
}

#[tokio::test]
async fn every_edit_bumps_the_version_and_deletes_spare_running_tasks() {
    let (db, queue) = setup().await;
    let t = queue.enqueue(&[task("before", "a", 0, 1)]).await.unwrap().remove(0);
    let mut tx = db.pool.begin().await.unwrap();
    let locked = Queue::lock_on(&mut tx, t.id).await.unwrap().unwrap();
    let edit = TaskEdit { title: Some("after".into()), payload: Some(json!({"n": 1})), ..Default::default() };
    assert!(edit.touches_queue_fields() && !edit.is_empty());
    let edited = Queue::edit_on(&mut tx, t.id, &edit).await.unwrap().unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        (edited.title.as_str(), edited.version, &edited.payload),
        ("after", locked.version + 1, &json!({"n": 1}))
    );
    assert_eq!(edited.description, t.description, "fields left out are kept");
    assert!(edited.updated_at > t.updated_at);

    assert_eq!(queue.delete_unless_running(t.id, Some(t.version)).await.unwrap(), DeleteOutcome::VersionMismatch);
    let claimed = queue.claim(1, Duration::from_secs(30), "w").await.unwrap().remove(0);
    assert_eq!(queue.delete_unless_running(t.id, None).await.unwrap(), DeleteOutcome::Running);
    queue.record(&[(t.id, claimed.lease_token, Outcome::Completed(json!(null)))]).await.unwrap();
    assert_eq!(queue.delete_unless_running(t.id, None).await.unwrap(), DeleteOutcome::Deleted);
    assert_eq!(queue.delete_unless_running(t.id, None).await.unwrap(), DeleteOutcome::NotFound);
}

/// The triggers' payloads, read back by the parser that lives beside them.
#[tokio::test]
async fn the_change_feed_names_what_each_statement_did() {
    let (db, queue) = setup().await;
    let mut listener = PgListener::connect_with(&db.pool).await.unwrap();
    listener.listen(EVENTS_CHANNEL).await.unwrap();
    let created = queue.enqueue(&[task("a", "a", 0, 4), task("b", "a", 0, 5)]).await.unwrap();
    let mut changes = FeedChanges::default();
    changes.add(listener.recv().await.unwrap().payload());
    assert_eq!(changes.changed.iter().copied().collect::<Vec<_>>(), [created[0].id, created[1].id]);
    queue.cancel(created[0].id).await.unwrap();
    sqlx::query("DELETE FROM tasks WHERE id = $1").bind(created[1].id).execute(&db.pool).await.unwrap();
    let mut later = FeedChanges::default();
    for _ in 0..2 {
        let n = tokio::time::timeout(Duration::from_secs(5), listener.recv()).await.unwrap().unwrap();
        later.add(n.payload());
    }
    assert_eq!(later.changed.iter().copied().collect::<Vec<_>>(), [created[0].id]);
    assert_eq!(later.deleted, [(created[1].id, Some(5))]);
    assert!(!later.resync && !later.is_empty());
}
