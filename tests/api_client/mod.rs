//! A real HTTP client (reqwest) for the tenant API of a running `serve`,
//! and waits that poll the API with a deadline.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{PATIENCE, Sesame};

/// `[api]` on a free loopback port, and a fast delivery poll.
pub const API_CONFIG: &str = "[api]\nlisten = \"127.0.0.1:0\"\n\n[delivery]\npoll_ms = 50\n";

pub struct Response {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Response {
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    }

    /// The `{"error": {"code", "message"}}` body of an error, checked.
    #[track_caller]
    pub fn error_code(&self) -> String {
        let v = self.json();
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "error without a message: {v}"
        );
        v["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code: {v}"))
            .to_string()
    }
}

pub struct Api {
    base: String,
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Api {
    /// The API of `s` (the `api` entry of its ready line).
    pub fn of(s: &Sesame) -> Api {
        Api {
            base: format!("http://{}", s.addr("api")),
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            client: reqwest::Client::new(),
        }
    }

    pub fn get(&self, path: &str, key: Option<&str>) -> Response {
        self.get_with(path, key.map(|k| format!("Bearer {k}")))
    }

    /// With a literal Authorization header value.
    pub fn get_with(&self, path: &str, authorization: Option<String>) -> Response {
        self.runtime.block_on(async {
            let mut request = self.client.get(format!("{}{path}", self.base));
            if let Some(a) = authorization {
                request = request.header("Authorization", a);
            }
            let response = request
                .timeout(PATIENCE)
                .send()
                .await
                .unwrap_or_else(|e| panic!("GET {path}: {e}"));
            Response {
                status: response.status().as_u16(),
                headers: response.headers().clone(),
                body: response.bytes().await.expect("body").to_vec(),
            }
        })
    }

    /// GET that must answer 200 with JSON.
    #[track_caller]
    pub fn json(&self, path: &str, key: &str) -> Value {
        let r = self.get(path, Some(key));
        assert_eq!(
            r.status,
            200,
            "GET {path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        r.json()
    }

    /// Polls `GET /v1/messages/{id}` until the message is stored.
    #[track_caller]
    pub fn wait_message(&self, s: &Sesame, key: &str, id: &str) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let r = self.get(&format!("/v1/messages/{id}"), Some(key));
            if r.status == 200 {
                return r.json();
            }
            assert_eq!(r.status, 404, "{}", String::from_utf8_lossy(&r.body));
            assert!(
                Instant::now() < deadline,
                "message {id} never reached the store\nlogs:\n{}",
                s.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `sesame apikey create TENANT`: the key it printed.
pub fn create_api_key(s: &Sesame, tenant: &str) -> String {
    let v = s.cli_json(&["apikey", "create", tenant]);
    v["key"]
        .as_str()
        .unwrap_or_else(|| panic!("no key in {v}"))
        .to_string()
}
