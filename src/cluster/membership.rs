//! Membership changes requested by an operator, run on the leader (forwarded there).

use std::time::Duration;

use openraft::BasicNode;
use serde::Deserialize;
use serde_json::json;

use super::{Cluster, network};
use crate::store::types::NodeId;

impl Cluster {
    /// A membership change requested by an operator (`add-learner {id, addr}`,
    /// `promote {id}`, `remove {id}`): run on the leader, forwarded there when this node is
    /// not it (`forward`). Answers 200 with the new status, or an error object.
    pub async fn admin(&self, op: &str, body: &[u8], forward: bool) -> (u16, Vec<u8>) {
        #[derive(Deserialize)]
        struct Req {
            id: NodeId,
            #[serde(default)]
            addr: String,
        }
        let err = |status: u16, msg: String| {
            (
                status,
                serde_json::to_vec(&json!({ "error": msg })).expect("json"),
            )
        };
        let Ok(req) = serde_json::from_slice::<Req>(body) else {
            return err(
                400,
                "body must be {\"id\": N, \"addr\": \"host:port\"}".into(),
            );
        };
        let m = self.raft.metrics().borrow().clone();
        if m.current_leader != Some(self.id) {
            if !forward {
                return err(409, "not the leader".into());
            }
            let Some((leader, addr)) = self.leader() else {
                return err(503, "no leader".into());
            };
            let path = format!("{}{op}", network::ADMIN_PREFIX);
            return match self
                .peer(leader, &addr, 0)
                .post(&path, body.to_vec(), Duration::from_secs(30))
                .await
            {
                Ok(b) => (200, b.to_vec()),
                Err(e) => err(502, e.to_string()),
            };
        }
        let voters: std::collections::BTreeSet<NodeId> =
            m.membership_config.membership().voter_ids().collect();
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
}
