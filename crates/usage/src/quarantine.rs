//! Usage messages an aggregator refused to apply (unsigned, a bad signature, records in another
//! node's name, unreadable): kept with what they claimed and why, beside the rollups, so that a
//! refused batch is never silently lost — an operator can read it. A genuine batch refused here
//! (a node with a wrong key) is not confirmed, so its node keeps it and ships it again until an
//! aggregator applies it: fixing the key bills it; applying the quarantined copy by hand as well
//! would bill it twice. Rows are only added; nothing here reads them on the request path.

use rusqlite::params;

use crate::rollup::{RollupError, Rollups};

/// One refused message as it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    /// The message id it came under (the JetStream id; empty without one).
    pub message_id: String,
    /// The node it said it came from (empty without one).
    pub claimed_node: String,
    /// Why it was refused (`unsigned`, `bad-signature`, `foreign-node`, ...).
    pub reason: String,
    pub payload: Vec<u8>,
    pub received_ms: i64,
}

impl Rollups {
    /// Keeps a refused message. Blocking. A message delivered again (its acknowledgement lost)
    /// is kept again: a second row, never a lost one.
    pub fn quarantine(&self, message: &Quarantined) -> Result<(), RollupError> {
        let Quarantined { message_id, claimed_node, reason, payload, received_ms } = message;
        if self.is_postgres() {
            return self.with_pg(|c| {
                c.execute(
                    "INSERT INTO usage_quarantine (message_id, claimed_node, reason, payload, received_ms)
                     VALUES ($1, $2, $3, $4, $5)",
                    &[message_id, claimed_node, reason, payload, received_ms],
                )
                .map(drop)
            });
        }
        self.lock().execute(
            "INSERT INTO quarantine (message_id, claimed_node, reason, payload, received_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![message_id, claimed_node, reason, payload, received_ms],
        )?;
        Ok(())
    }

    /// The last `limit` refused messages, newest first. Blocking.
    pub fn quarantined(&self, limit: u32) -> Result<Vec<Quarantined>, RollupError> {
        if self.is_postgres() {
            let rows = self.with_pg(|c| {
                c.query(
                    "SELECT message_id, claimed_node, reason, payload, received_ms FROM usage_quarantine
                     ORDER BY id DESC LIMIT $1",
                    &[&i64::from(limit)],
                )
            })?;
            return Ok(rows
                .iter()
                .map(|row| Quarantined {
                    message_id: row.get(0),
                    claimed_node: row.get(1),
                    reason: row.get(2),
                    payload: row.get(3),
                    received_ms: row.get(4),
                })
                .collect());
        }
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT message_id, claimed_node, reason, payload, received_ms FROM quarantine ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit], |row| {
            Ok(Quarantined {
                message_id: row.get(0)?,
                claimed_node: row.get(1)?,
                reason: row.get(2)?,
                payload: row.get(3)?,
                received_ms: row.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_messages_are_kept_whole_and_apart_from_the_rollups() {
        let rollups = Rollups::open_in_memory().expect("rollups");
        let message = |n: u8| Quarantined {
            message_id: format!("b-{n}"),
            claimed_node: "api-0".into(),
            reason: "unsigned".into(),
            payload: vec![n, 0, 255],
            received_ms: i64::from(n),
        };
        rollups.quarantine(&message(1)).expect("kept");
        rollups.quarantine(&message(2)).expect("kept");
        rollups.quarantine(&message(2)).expect("a redelivery is kept again");
        assert_eq!(rollups.quarantined(10).expect("read"), [message(2), message(2), message(1)]);
        assert_eq!(rollups.quarantined(1).expect("read").len(), 1);
        assert!(!rollups.is_applied("b-1").expect("read"), "a refused message is not an applied batch");
    }
}
