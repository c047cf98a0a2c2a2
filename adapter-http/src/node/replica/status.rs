//! What a member says about its group: role, term, leader, commit and applied index, and (on the leader)
//! how far behind each follower is. The Raft thread publishes it after every round; `/v1/stats`,
//! `/metrics` and `/healthz` read it.

use crate::front::{Exposition, Kind};

use super::state_dump::Members;

/// A follower's replication, as its leader sees it.
#[derive(Debug, Clone, Default)]
pub struct Lag {
    /// The follower.
    pub member: u64,
    /// The last index known to be in its log.
    pub matched: u64,
    /// Entries of the leader's log it does not have yet.
    pub behind: u64,
}

/// A member's view of its group.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// This member.
    pub id: u64,
    /// `leader`, `follower` or `candidate`.
    pub role: &'static str,
    /// The current term.
    pub term: u64,
    /// The leader this member knows (0: none).
    pub leader: u64,
    /// The highest index known to be committed.
    pub commit: u64,
    /// The highest index applied to the engine.
    pub applied: u64,
    /// The last index in this member's log.
    pub last_index: u64,
    /// The index of the latest snapshot (the log starts after it).
    pub snapshot_index: u64,
    /// The voting members.
    pub voters: Vec<u64>,
    /// Every member's URL.
    pub members: Members,
    /// On the leader: each follower's replication.
    pub lag: Vec<Lag>,
    /// Why this member stopped serving, if it did.
    pub failed: Option<String>,
}

impl Status {
    /// The `replica` object of `/v1/stats`.
    pub fn json(&self) -> serde_json::Value {
        let lag: Vec<_> = self
            .lag
            .iter()
            .map(|l| serde_json::json!({ "member": l.member, "matched": l.matched, "behind": l.behind }))
            .collect();
        serde_json::json!({
            "member": self.id,
            "role": self.role,
            "term": self.term,
            "leader": if self.leader == 0 { serde_json::Value::Null } else { self.leader.into() },
            "leader_url": self.members.get(&self.leader),
            "commit_index": self.commit,
            "applied_index": self.applied,
            "last_index": self.last_index,
            "snapshot_index": self.snapshot_index,
            "voters": self.voters,
            "members": self.members.iter().map(|(id, url)| (id.to_string(), url.clone().into())).collect::<serde_json::Map<_, _>>(),
            "followers": lag,
            "failed": self.failed,
        })
    }

    /// The group's gauges, appended to `/metrics`.
    pub fn prometheus(&self, e: &mut Exposition) {
        e.single("otkv_replica_member", Kind::Gauge, "This member's id in its replica group.", self.id);
        let help = "1 while this member leads its replica group.";
        e.single("otkv_replica_is_leader", Kind::Gauge, help, u8::from(self.role == "leader"));
        e.single("otkv_replica_term", Kind::Gauge, "The Raft term.", self.term);
        e.single("otkv_replica_leader", Kind::Gauge, "The leader this member knows (0: none).", self.leader);
        e.single(
            "otkv_replica_commit_index",
            Kind::Gauge,
            "The highest log index known committed.",
            self.commit,
        );
        e.single("otkv_replica_applied_index", Kind::Gauge, "The highest log index applied.", self.applied);
        e.single("otkv_replica_voters", Kind::Gauge, "Voting members of the group.", self.voters.len());
        if !self.lag.is_empty() {
            let help = "On the leader: entries of its log each follower does not have yet.";
            e.family("otkv_replica_follower_behind_entries", Kind::Gauge, help);
            for l in &self.lag {
                e.sample("otkv_replica_follower_behind_entries", &[("member", &l.member)], l.behind);
            }
        }
    }
}
