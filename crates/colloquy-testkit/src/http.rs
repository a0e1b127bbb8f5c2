//! REST calls with an API key.

use serde_json::Value;

/// `GET {base}{path}` with `key` in the `X-Hume-Api-Key` header: the status and the JSON
/// body (`Null` when the body is empty or not JSON).
pub async fn get_json(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    path: &str,
) -> reqwest::Result<(u16, Value)> {
    send(http.get(format!("{base}{path}")), key).await
}

/// `DELETE {base}{path}` with `key`, like [`get_json`].
pub async fn delete_json(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    path: &str,
) -> reqwest::Result<(u16, Value)> {
    send(http.delete(format!("{base}{path}")), key).await
}

async fn send(req: reqwest::RequestBuilder, key: &str) -> reqwest::Result<(u16, Value)> {
    let resp = req.header("X-Hume-Api-Key", key).send().await?;
    let status = resp.status().as_u16();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    Ok((status, body))
}
