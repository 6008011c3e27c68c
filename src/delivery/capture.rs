//! The `capture` transport (the dev default): mail never leaves the
//! machine. Each recipient is recorded `delivered` with transport `capture`
//! on its queue.db row, and the queued entry (body included) is kept, so the
//! message stays readable (`sesame queue show ID`). The copy in the
//! tenant's store (direction `captured`) is written by `local::KeepSent`,
//! which wraps this transport.

use async_trait::async_trait;

use super::{Outcome, Outgoing, Transport};

pub struct Capture;

#[async_trait]
impl Transport for Capture {
    fn name(&self) -> &'static str {
        "capture"
    }

    async fn deliver(&self, message: &Outgoing, recipients: &[String]) -> Vec<Outcome> {
        recipients
            .iter()
            .map(|_| {
                Outcome::delivered(format!(
                    "250 2.0.0 Ok: captured {} (kept in queue.db)",
                    message.message_id
                ))
            })
            .collect()
    }
}
