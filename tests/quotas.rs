//! SES sending quotas per tenant: SES's defaults for sandbox and production
//! tenants, `tenant set --max-send-rate/--max-24h-send`, and the 454
//! replies when a quota is exceeded (recipients counted, as SES does).

mod common;

use common::*;

fn quota(s: &Sesame, tenant: &str) -> serde_json::Value {
    let list = s.cli_json(&["tenant", "list", "--json"]);
    list.as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == tenant)
        .unwrap_or_else(|| panic!("no tenant {tenant} in {list}"))["send_quota"]
        .clone()
}

#[test]
fn quotas_default_to_ses_values_and_can_be_set() {
    let s = Sesame::offline(Options::new());
    s.create_tenant("acme");
    assert_eq!(
        quota(&s, "acme"),
        serde_json::json!({"MaxSendRate": 1, "Max24HourSend": 200})
    );
    s.set_production("acme");
    assert_eq!(
        quota(&s, "acme"),
        serde_json::json!({"MaxSendRate": 14, "Max24HourSend": 50000})
    );
    let t = s.cli_json(&["tenant", "set", "acme", "--max-24h-send", "-1"]);
    assert_eq!(
        t["send_quota"],
        serde_json::json!({"MaxSendRate": 14, "Max24HourSend": -1})
    );
    s.cli_ok(&["tenant", "set", "acme", "--max-send-rate", "3"]);
    assert_eq!(
        quota(&s, "acme"),
        serde_json::json!({"MaxSendRate": 3, "Max24HourSend": -1})
    );
    assert!(
        s.cli_ok(&["tenant", "list"])
            .contains("acme\tproduction\tcapture\t3/s\t-1/24h")
    );
    for bad in ["0", "-2"] {
        let (st, _, err) = s.cli(&["tenant", "set", "acme", "--max-send-rate", bad]);
        assert!(
            !st.success() && err.contains("--max-send-rate must be at least 1"),
            "{err}"
        );
    }
}

fn send(s: &Sesame, acct: &Account, rcpts: &[String]) -> Swaks {
    swaks_owned(&submit_args(s, acct, "app@acme.test", &rcpts.join(",")))
}

fn rcpts(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}@example.net")).collect()
}

/// Max24HourSend counts recipients over the last 24 hours, in queue.db, so
/// a restart does not reset it; a message that would pass it is refused
/// whole.
#[test]
fn the_daily_quota_counts_recipients_and_survives_a_restart() {
    let mut s = Sesame::start(Options::new());
    let acct = s.account("acme", "acme.test", true);
    s.cli_ok(&[
        "tenant",
        "set",
        "acme",
        "--max-24h-send",
        "3",
        "--max-send-rate",
        "-1",
    ]);
    send(&s, &acct, &rcpts("a", 2)).expect_accepted();
    let over = send(&s, &acct, &rcpts("b", 2));
    over.assert_reply("454 4.7.0 Throttling failure: Daily message quota exceeded");
    send(&s, &acct, &rcpts("c", 1)).expect_accepted();
    s.stop();
    s.restart();
    send(&s, &acct, &rcpts("d", 1))
        .assert_reply("454 4.7.0 Throttling failure: Daily message quota exceeded");
    assert_eq!(s.queue().len(), 2, "refused messages are not queued");
    // Another tenant has its own count.
    let other = s.account("beta", "beta.test", true);
    swaks_owned(&submit_args(&s, &other, "app@beta.test", "x@example.net")).expect_accepted();
}

/// MaxSendRate: a burst (up to a minute's worth of recipients) passes,
/// then the sender must wait; each recipient counts.
#[test]
fn the_sending_rate_counts_recipients() {
    let s = Sesame::start(Options::new());
    let acct = s.account("acme", "acme.test", true);
    s.cli_ok(&["tenant", "set", "acme", "--max-send-rate", "1"]);
    // 60 tokens: 50 leave 10, the next 50 leave a debt of 40 s.
    send(&s, &acct, &rcpts("a", 50)).expect_accepted();
    send(&s, &acct, &rcpts("b", 50)).expect_accepted();
    send(&s, &acct, &rcpts("c", 1))
        .assert_reply("454 4.7.0 Throttling failure: Maximum sending rate exceeded");
    assert!(s.log.wait_for(|l| l.contains("sending rate exceeded")));
}
