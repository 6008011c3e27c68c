//! RFC 1035 zone files for delegated domains: what `domain records
//! --format zone` prints, what nsd or BIND load unchanged, and what the
//! embedded server parses and serves.

use std::fmt::Write;

use super::records::{self, Record};
use crate::config::Config;
use crate::control::Domain;

const TTL: u32 = 300;

/// The whole zone of a delegated domain: SOA, NS, then every record.
pub fn render(domain: &Domain, config: &Config) -> String {
    let d = &domain.domain;
    let nameservers = zone_nameservers(config);
    let mut out = String::new();
    let _ = writeln!(out, "; sesame zone for {d} (tenant {})", domain.tenant);
    let _ = writeln!(out, "$ORIGIN {d}.");
    let _ = writeln!(out, "$TTL {TTL}");
    // The serial is the time the published records last changed, so it
    // grows with every change and is the same however often it is printed.
    let _ = writeln!(
        out,
        "{d}. {TTL} IN SOA {}. hostmaster.{d}. {} 3600 600 604800 {TTL}",
        nameservers[0],
        domain.records_changed_at.max(1) as u32
    );
    for ns in &nameservers {
        let _ = writeln!(out, "{d}. {TTL} IN NS {ns}.");
    }
    for record in records::for_domain(domain, config) {
        let _ = writeln!(out, "{}", line(&record));
    }
    out
}

fn zone_nameservers(config: &Config) -> Vec<String> {
    if config.dns.zone_nameservers.is_empty() {
        vec![config.public_hostname().to_string()]
    } else {
        config.dns.zone_nameservers.clone()
    }
}

fn line(record: &Record) -> String {
    let value = match record.rtype {
        "TXT" => quoted_strings(&record.value),
        // MX targets are absolute names.
        _ => format!("{}.", record.value),
    };
    format!("{}. {TTL} IN {} {value}", record.name, record.rtype)
}

/// A TXT value as quoted character-strings of at most 255 octets (RFC 1035
/// 3.3.14); verifiers join them back together (RFC 6376 3.6.2.2).
fn quoted_strings(value: &str) -> String {
    value
        .as_bytes()
        .chunks(255)
        .map(|chunk| {
            format!(
                "\"{}\"",
                String::from_utf8_lossy(chunk)
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_txt_values_are_split_at_255_octets() {
        let value = "x".repeat(300);
        let quoted = quoted_strings(&value);
        assert_eq!(
            quoted,
            format!("\"{}\" \"{}\"", "x".repeat(255), "x".repeat(45))
        );
    }
}
