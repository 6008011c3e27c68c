//! Sans-IO SMTP pieces that smtp-proto does not provide: replies, SES reply
//! texts, strict DATA framing and header-block handling.

pub mod data;
pub mod headers;
pub mod reply;
pub mod send_options;
pub mod texts;

pub use reply::Reply;
