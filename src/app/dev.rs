//! The offline developer set-up: a tenant, a verified domain, a static
//! credential and a fixed API key, provisioned idempotently at every start.

use crate::config::DevConfig;
use crate::control::Control;
use crate::domains;

pub fn provision(control: &Control, dev: &DevConfig) -> anyhow::Result<()> {
    control.ensure_tenant(&dev.tenant)?;
    // Dev delivery is capture: nothing leaves the machine, so the sandbox
    // would only get in the way.
    control.set_sandbox(&dev.tenant, false)?;
    // Keys like any domain, so captured dev mail is signed; verified
    // without DNS.
    domains::ensure(control, &dev.tenant, &dev.domain, true)?;
    control.ensure_static_credential(&dev.tenant, &dev.username, &dev.password)?;
    // Honoured by the API only while dev mode is on (like the credential).
    control.ensure_static_api_key(&dev.tenant, crate::api::DEV_API_KEY)?;
    Ok(())
}
