//! The configuration set named by `X-SES-CONFIGURATION-SET` must exist for
//! the sending tenant; SES refuses the message otherwise.

use crate::control::Control;
use crate::proto::send_options::SendOptions;
use crate::proto::{Reply, texts};

pub fn check(control: &Control, tenant: &str, message: &[u8]) -> Result<(), Reply> {
    let Some(name) = SendOptions::from_headers(message).configuration_set else {
        return Ok(());
    };
    match control.config_set(tenant, &name) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(texts::unknown_configuration_set(&name)),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "control database lookup failed");
            Err(texts::temporary_failure())
        }
    }
}
