//! One `SdkConfig` for every AWS client sesame makes: region and
//! credentials from the standard chain, an optional endpoint override, and
//! rustls on ring (the crypto the rest of sesame already uses).

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};

use super::settings::AwsConfig;

/// Bounds every AWS call, so that a stalled S3 or SQS peer can neither
/// hang a worker nor a graceful stop; above the 20 s SQS long poll.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn sdk_config(config: &AwsConfig) -> SdkConfig {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .timeout_config(timeouts);
    if let Some(region) = &config.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(url) = &config.endpoint_url {
        loader = loader.endpoint_url(url.clone());
    }
    loader.load().await
}

pub fn sqs(sdk: &SdkConfig) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(sdk)
}

/// S3 with path-style addressing whenever the endpoint is overridden:
/// virtual-host style needs DNS for `<bucket>.<host>`, which a local or
/// VPC endpoint does not have.
pub fn s3(sdk: &SdkConfig, config: &AwsConfig) -> aws_sdk_s3::Client {
    let s3_config = aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(config.endpoint_url.is_some())
        .build();
    aws_sdk_s3::Client::from_conf(s3_config)
}
