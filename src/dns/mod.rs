//! DNS: the records sesame publishes for its domains, a resolver pointed at
//! configurable nameservers, and the embedded authoritative server.

pub mod records;
pub mod resolver;
pub mod server;
pub mod zone;

pub use records::{Purpose, Record};
pub use resolver::{Answer, DnsResolver};
