//! SMTP server sessions: the sans-IO state machine and the driver that runs
//! it over a plain or TLS stream.

mod driver;
pub mod machine;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::net::SocketAddr;

pub use driver::{ListenerContext, run};
pub use machine::{Action, Machine, Policy, Transaction};

use crate::auth::AuthOutcome;
use crate::config::ListenerKind;
use crate::proto::Reply;

/// What the policy layer knows about a session when it is asked a question.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub session_id: u64,
    pub peer: SocketAddr,
    pub listener: ListenerKind,
    pub tls: bool,
    pub helo: Option<String>,
    pub tenant: Option<String>,
    pub username: Option<String>,
}

/// The decisions a session cannot make by itself.
pub trait Backend: Send + Sync + 'static {
    fn authenticate(
        &self,
        session: &SessionInfo,
        username: &str,
        password: &str,
    ) -> impl Future<Output = AuthOutcome> + Send;

    fn recipient(
        &self,
        session: &SessionInfo,
        recipient: &str,
    ) -> impl Future<Output = Result<(), Reply>> + Send;

    /// Checks, prepares and durably queues a message; the reply is final.
    fn message(
        &self,
        session: &SessionInfo,
        transaction: Transaction,
    ) -> impl Future<Output = Reply> + Send;
}
