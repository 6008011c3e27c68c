//! The AWS production adapter: SES sends (the `ses` transport in
//! `delivery::ses`), SES feedback comes back from SQS (`feedback`), and
//! mail that SES received into S3 is ingested (`ingest`).
//!
//! Nothing here runs without an `[aws]` config section, and every client
//! is built from one `SdkConfig` (`clients`), so an `endpoint_url` sends
//! all of it to one place (moto in the tests).

pub mod clients;
pub mod feedback;
pub mod ingest;
pub mod poller;
pub mod settings;

use std::collections::BTreeSet;
use std::sync::Arc;

use aws_config::SdkConfig;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::control::Control;
use ingest::{InboundSink, Ingest};
use poller::Poller;
use settings::AwsConfig;

/// Starts the feedback worker and one inbound worker per distinct inbound
/// queue; each stops when `stop` turns true.
pub fn spawn_workers(
    config: &AwsConfig,
    sdk: &SdkConfig,
    control: Arc<Control>,
    sink: Arc<dyn InboundSink>,
    stop: &watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) {
    let sqs = clients::sqs(sdk);
    if let Some(url) = &config.feedback_queue_url {
        let poller = Poller::new(sqs.clone(), url, "feedback", config);
        let control = control.clone();
        tasks.spawn(poller.run(stop.clone(), move |body| {
            let control = control.clone();
            async move { feedback::handle(&control, &body) }
        }));
    }
    let queues: BTreeSet<&str> = config
        .inbound
        .iter()
        .map(|m| m.queue_url.as_str())
        .collect();
    if queues.is_empty() {
        return;
    }
    let ingest = Arc::new(Ingest {
        s3: clients::s3(sdk, config),
        config: Arc::new(config.clone()),
        sink,
        stall_after_commit: std::env::var_os(ingest::STALL_AFTER_COMMIT_ENV).is_some(),
    });
    for url in queues {
        let poller = Poller::new(sqs.clone(), url, "inbound", config);
        let ingest = ingest.clone();
        tasks.spawn(poller.run(stop.clone(), move |body| {
            let ingest = ingest.clone();
            async move { ingest.handle(&body).await }
        }));
    }
}
