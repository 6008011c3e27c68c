//! One handler per route. Each authenticates first, then reads only the
//! authenticated tenant's store (SQLite and blob reads run on the blocking
//! pool).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::error::ApiError;
use super::{ApiState, OPENAPI};
use crate::store::{Direction, MessageFilter, Store};

type Params = Query<HashMap<String, String>>;

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 500;

/// Runs a store read for the request's tenant off the async threads.
async fn with_store<T: Send + 'static>(
    state: &ApiState,
    headers: &HeaderMap,
    read: impl FnOnce(&Store) -> anyhow::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    let tenant = state.tenant(headers).await?;
    let stores = state.stores.clone();
    tokio::task::spawn_blocking(move || read(&*stores.get(&tenant)?))
        .await
        .map_err(|e| ApiError::internal(e.into()))?
        .map_err(ApiError::internal)
}

fn limit(params: &HashMap<String, String>) -> Result<usize, ApiError> {
    match params.get("limit") {
        None => Ok(DEFAULT_LIMIT),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!("limit must be an integer from 1 to {MAX_LIMIT}"))
            }),
    }
}

/// `since`: RFC 3339 (`2026-01-31T09:00:00Z`) or Unix seconds.
fn since(value: &str) -> Result<i64, ApiError> {
    value
        .parse::<i64>()
        .ok()
        .or_else(|| mail_parser::DateTime::parse_rfc3339(value).map(|d| d.to_timestamp()))
        .ok_or_else(|| ApiError::bad_request("since must be an RFC 3339 timestamp or Unix seconds"))
}

fn not_found_message(id: &str) -> ApiError {
    ApiError::not_found(format!("no message '{id}'"))
}

pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

pub async fn no_route() -> ApiError {
    ApiError::not_found("no such endpoint; see /openapi.json")
}

pub async fn threads(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Query(params): Params,
) -> Result<Json<Value>, ApiError> {
    let limit = limit(&params)?;
    let cursor = params.get("cursor").cloned();
    let page = with_store(&state, &headers, move |s| {
        s.threads(limit, cursor.as_deref())
    })
    .await?;
    let page = page.map_err(ApiError::bad_request)?;
    Ok(Json(
        json!({"threads": page.items, "nextCursor": page.next}),
    ))
}

pub async fn thread(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let lookup = id.clone();
    with_store(&state, &headers, move |s| s.thread(&lookup))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no thread '{id}'")))
}

pub async fn messages(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Query(params): Params,
) -> Result<Json<Value>, ApiError> {
    let known = [
        "direction",
        "from",
        "to",
        "subject",
        "since",
        "limit",
        "cursor",
    ];
    if let Some(unknown) = params.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "unknown parameter '{unknown}'; filters are {}",
            known.join(", ")
        )));
    }
    let direction = match params.get("direction") {
        None => None,
        Some(d) => Some(Direction::parse(d).ok_or_else(|| {
            ApiError::bad_request("direction must be inbound, outbound or captured")
        })?),
    };
    let filter = MessageFilter {
        direction,
        from: params.get("from").cloned(),
        to: params.get("to").cloned(),
        subject: params.get("subject").cloned(),
        since: params.get("since").map(|s| since(s)).transpose()?,
        limit: limit(&params)?,
        cursor: params.get("cursor").cloned(),
    };
    let page = with_store(&state, &headers, move |s| s.messages(&filter))
        .await?
        .map_err(ApiError::bad_request)?;
    Ok(Json(
        json!({"messages": page.items, "nextCursor": page.next}),
    ))
}

pub async fn message(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let lookup = id.clone();
    with_store(&state, &headers, move |s| s.message(&lookup))
        .await?
        .map(Json)
        .ok_or_else(|| not_found_message(&id))
}

pub async fn raw(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let lookup = id.clone();
    let raw = with_store(&state, &headers, move |s| s.raw(&lookup))
        .await?
        .ok_or_else(|| not_found_message(&id))?;
    Ok(([(header::CONTENT_TYPE, "message/rfc822")], raw).into_response())
}

/// `filename="..."` with anything unsafe replaced, plus RFC 6266's
/// `filename*` for names that are not plain ASCII.
fn content_disposition(filename: Option<&str>, index: i64) -> HeaderValue {
    let name = filename
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| format!("attachment-{index}"));
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut value = format!("attachment; filename=\"{ascii}\"");
    if ascii != name {
        let encoded: String = name
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        value.push_str(&format!("; filename*=UTF-8''{encoded}"));
    }
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

pub async fn attachment(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path((id, n)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let index: i64 = n
        .parse()
        .ok()
        .filter(|i| *i >= 0)
        .ok_or_else(|| ApiError::bad_request("the attachment index is a number from 0"))?;
    let lookup = id.clone();
    let file = with_store(&state, &headers, move |s| s.attachment(&lookup, index))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("message '{id}' has no attachment {index}")))?;
    let Some(data) = file.data else {
        return Err(ApiError {
            status: StatusCode::GONE,
            code: "attachment_removed",
            message: "this attachment contained malware and was removed before the message was queued; its metadata and verdict remain".into(),
        });
    };
    let content_type = HeaderValue::from_str(&file.content_type)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    let mut response = data.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, content_type);
    h.insert(
        header::CONTENT_DISPOSITION,
        content_disposition(file.filename.as_deref(), index),
    );
    // A downloaded attachment must never be rendered as something else.
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(response)
}

pub async fn events(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Query(params): Params,
) -> Result<Json<Value>, ApiError> {
    let tenant = state.tenant(&headers).await?;
    let control = state.control.clone();
    let message = params.get("message").cloned();
    let events = tokio::task::spawn_blocking(move || control.events(&tenant, message.as_deref()))
        .await
        .map_err(|e| ApiError::internal(e.into()))??;
    let events: Vec<Value> = events
        .into_iter()
        .map(|e| {
            json!({
                "id": e.id,
                "messageId": e.message_id,
                "eventType": e.event_type,
                "createdAt": crate::control::iso8601_millis(e.created_at * 1000),
                "event": e.event,
            })
        })
        .collect();
    Ok(Json(json!({ "events": events })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_names_are_safe_and_keep_unicode_in_filename_star() {
        let plain = content_disposition(Some("report.pdf"), 0);
        assert_eq!(plain, "attachment; filename=\"report.pdf\"");
        let hostile = content_disposition(Some("a\"b\r\nX: y.txt"), 1);
        assert_eq!(
            hostile.to_str().unwrap(),
            "attachment; filename=\"a_b__X: y.txt\"; filename*=UTF-8''a%22b%0D%0AX%3A%20y.txt"
        );
        let unicode = content_disposition(Some("résumé.pdf"), 2);
        assert!(
            unicode
                .to_str()
                .unwrap()
                .ends_with("filename*=UTF-8''r%C3%A9sum%C3%A9.pdf")
        );
        assert_eq!(
            content_disposition(None, 3),
            "attachment; filename=\"attachment-3\""
        );
    }

    #[test]
    fn since_takes_rfc3339_or_unix_seconds() {
        assert_eq!(since("1700000000").unwrap(), 1_700_000_000);
        assert_eq!(since("2016-01-27T14:58:45Z").unwrap(), 1_453_906_725);
        assert!(since("yesterday").is_err());
    }
}
