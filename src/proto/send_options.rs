//! What a message asks of SES besides delivery: the configuration set and
//! the message tags, read from the `X-SES-CONFIGURATION-SET` and
//! `X-SES-MESSAGE-TAGS` headers. The one reader of those headers: the
//! submission check (does the set exist), the engine (TLS policy, event
//! tags) and the `ses` transport (which passes them on, since the engine
//! strips the headers before a transport sees the body).

use crate::proto::headers::HeaderBlock;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendOptions {
    pub configuration_set: Option<String>,
    /// (name, value) pairs in header order.
    pub tags: Vec<(String, String)>,
}

impl SendOptions {
    pub fn from_headers(message: &[u8]) -> SendOptions {
        let headers = HeaderBlock::parse(message);
        let mut options = SendOptions::default();
        for field in &headers.fields {
            let text = String::from_utf8_lossy(&message[field.start..field.end]);
            let value = text
                .split_once(':')
                .map_or("", |(_, v)| v)
                .replace("\r\n", "");
            let value = value.trim();
            if field.name.eq_ignore_ascii_case("X-SES-CONFIGURATION-SET") && !value.is_empty() {
                options.configuration_set = Some(value.to_string());
            } else if field.name.eq_ignore_ascii_case("X-SES-MESSAGE-TAGS") {
                for pair in value.split(',') {
                    if let Some((name, value)) = pair.split_once('=') {
                        options
                            .tags
                            .push((name.trim().to_string(), value.trim().to_string()));
                    }
                }
            }
        }
        options
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_set_and_tags_come_from_the_headers() {
        let message = b"From: a@b.test\r\nX-SES-CONFIGURATION-SET: marketing\r\n\
            X-SES-MESSAGE-TAGS: campaign=spring, team = growth\r\n\r\nbody\r\n";
        let options = SendOptions::from_headers(message);
        assert_eq!(options.configuration_set.as_deref(), Some("marketing"));
        assert_eq!(
            options.tags,
            [
                ("campaign".to_string(), "spring".to_string()),
                ("team".to_string(), "growth".to_string())
            ]
        );
        assert_eq!(
            SendOptions::from_headers(b"From: a@b.test\r\n\r\nX-SES-CONFIGURATION-SET: no\r\n"),
            SendOptions::default(),
            "the body is not headers"
        );
        let folded = b"Subject: x\r\nx-ses-configuration-set:\r\n  Marketing \r\n\r\nbody\r\n";
        assert_eq!(
            SendOptions::from_headers(folded)
                .configuration_set
                .as_deref(),
            Some("Marketing")
        );
    }
}
