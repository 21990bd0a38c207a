//! The change feed on [`crate::EVENTS_CHANNEL`]: what every statement did to which tasks,
//! for live views. The payload is written by the `task_events` triggers (see the
//! `notify_after_commit` migration) and by [`changed_payload`] for writers that send
//! their notifications after commit; [`FeedChanges`] reads it back.
//!
//! Payloads: `c<id>,<id>,…` (inserted or updated), `d<id>:<owner>,…` (deleted, with the
//! owner so a view can tell whom to tell), `r` (too many to list: reload).

use std::collections::BTreeSet;

/// Most task ids a change-feed notification lists; the trigger uses the same bound.
pub(crate) const MAX_IDS_IN_PAYLOAD: usize = 600;
/// Below PostgreSQL's 8000-byte limit on a notification's payload.
const MAX_PAYLOAD_BYTES: usize = 7900;

/// The payload for tasks inserted or updated: `c` and their ids, or `r` when that would
/// not fit in a notification.
pub(crate) fn changed_payload(ids: &[i64]) -> String {
    if ids.len() > MAX_IDS_IN_PAYLOAD {
        return "r".into();
    }
    let list: Vec<String> = ids.iter().map(i64::to_string).collect();
    let payload = format!("c{}", list.join(","));
    if payload.len() > MAX_PAYLOAD_BYTES {
        "r".into()
    } else {
        payload
    }
}

/// Changes read from any number of notifications.
#[derive(Debug, Default, PartialEq)]
pub struct FeedChanges {
    /// Inserted or updated: read them to see how they are now.
    pub changed: BTreeSet<i64>,
    /// Deleted, with their owners.
    pub deleted: Vec<(i64, Option<i64>)>,
    /// Something was not listed: reload everything.
    pub resync: bool,
}

impl FeedChanges {
    /// Adds one notification's payload. Anything unreadable asks for a reload.
    pub fn add(&mut self, payload: &str) {
        let (kind, rest) = payload.split_at(payload.len().min(1));
        match kind {
            "c" => self.changed.extend(rest.split(',').filter_map(|id| id.parse::<i64>().ok())),
            "d" => self.deleted.extend(rest.split(',').filter_map(|pair| {
                let (id, owner) = pair.split_once(':')?;
                Some((id.parse().ok()?, owner.parse().ok()))
            })),
            _ => self.resync = true,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.deleted.is_empty() && !self.resync
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        let mut c = FeedChanges::default();
        c.add(&changed_payload(&[1, 2, 3]));
        c.add("c3,4");
        c.add("d7:1,8:");
        assert_eq!(c.changed.iter().copied().collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert_eq!(c.deleted, [(7, Some(1)), (8, None)]);
        assert!(!c.resync);
        let mut r = FeedChanges::default();
        r.add(&changed_payload(&(0..601).collect::<Vec<_>>()));
        assert!(r.resync);
        let mut junk = FeedChanges::default();
        junk.add("");
        assert!(junk.resync);
    }
}
