//! Membership changes requested by an operator, run on the leader (forwarded there).

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::BasicNode;
use openraft::async_runtime::WatchReceiver;
use serde::Deserialize;
use serde_json::json;

use super::{Cluster, network};
use crate::store::types::NodeId;

/// An operator's request: `{id}`, with `addr` for `add-learner`.
#[derive(Deserialize)]
struct Req {
    id: NodeId,
    #[serde(default)]
    addr: String,
}

/// An answer with `status` and `{"error": msg}`.
fn err(status: u16, msg: String) -> (u16, Vec<u8>) {
    (
        status,
        serde_json::to_vec(&json!({ "error": msg })).expect("json"),
    )
}

impl Cluster {
    /// A membership change requested by an operator (`add-learner {id, addr}`,
    /// `promote {id}`, `remove {id}`): run on the leader, forwarded there when this node is
    /// not it (`forward`; the leader's answer is passed on as it is). Answers 200 with the new
    /// status, or an error object: 404 when `promote` or `remove` names a node that is not a
    /// member (openraft would accept removing a non-member as a change that changes nothing).
    pub async fn admin(&self, op: &str, body: &[u8], forward: bool) -> (u16, Vec<u8>) {
        let Ok(req) = serde_json::from_slice::<Req>(body) else {
            return err(
                400,
                "body must be {\"id\": N, \"addr\": \"host:port\"}".into(),
            );
        };
        let m = self.raft.metrics().borrow_watched().clone();
        if m.current_leader != Some(self.id) {
            return self.forward_admin(op, body, forward).await;
        }
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let members: BTreeSet<NodeId> = membership.nodes().map(|(id, _)| *id).collect();
        if matches!(op, "promote" | "remove") && !members.contains(&req.id) {
            return err(
                404,
                format!(
                    "node {} is not a member of the cluster (members: {members:?})",
                    req.id
                ),
            );
        }
        let res = match op {
            "add-learner" => {
                if req.addr.is_empty() {
                    return err(400, "add-learner needs addr".into());
                }
                self.raft
                    .add_learner(req.id, BasicNode { addr: req.addr }, true)
                    .await
            }
            "promote" => {
                self.raft
                    .change_membership(openraft::ChangeMembers::AddVoterIds([req.id].into()), false)
                    .await
            }
            "remove" if voters.contains(&req.id) => {
                self.raft
                    .change_membership(
                        openraft::ChangeMembers::RemoveVoters([req.id].into()),
                        false,
                    )
                    .await
            }
            "remove" => {
                self.raft
                    .change_membership(openraft::ChangeMembers::RemoveNodes([req.id].into()), false)
                    .await
            }
            _ => return err(404, format!("unknown operation {op}")),
        };
        match res {
            Ok(_) => (200, serde_json::to_vec(&self.status()).expect("json")),
            Err(e) => err(409, e.to_string()),
        }
    }

    /// On a follower: the request passed to the leader's cluster listener and its answer
    /// passed back (status and body), or 409 when `forward` is off (a forwarded request that
    /// reached a node no longer leading).
    async fn forward_admin(&self, op: &str, body: &[u8], forward: bool) -> (u16, Vec<u8>) {
        if !forward {
            return err(409, "not the leader".into());
        }
        let Some((leader, addr)) = self.leader() else {
            return err(503, "no leader".into());
        };
        let path = format!("{}{op}", network::ADMIN_PREFIX);
        match self
            .peer(leader, &addr, 0)
            .post_answer(&path, body.to_vec(), Duration::from_secs(30))
            .await
        {
            Ok((status, b)) => (status.as_u16(), b.to_vec()),
            Err(e) => err(502, e.to_string()),
        }
    }
}
