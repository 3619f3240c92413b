//! Ollama: the model list (`/api/tags`). Script writing through `/api/chat` comes with the online
//! providers work.

use std::time::Duration;

use hyper::Method;
use serde_json::Value;

use super::http::{json, HttpError};
use crate::config::LlmConfig;

/// Names of the models Ollama has installed.
pub async fn list_models(cfg: &LlmConfig) -> Result<Vec<String>, HttpError> {
    let url = format!("{}/api/tags", cfg.ollama_base_url.trim_end_matches('/'));
    let v = json(Method::GET, &url, None, Duration::from_secs(3)).await?;
    Ok(v.get("models")
        .and_then(Value::as_array)
        .map(|ms| {
            ms.iter()
                .filter_map(|m| m.get("name").or_else(|| m.get("model")))
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default())
}
