//! Ollama: chat completions (`POST /api/chat`, non-streaming), falling back to `POST /api/generate`
//! when the server has no chat endpoint (404 not about a model, as MoneyPrinter does), and the model
//! list (`GET /api/tags`, also behind `GET /api/models`).
//!
//! A model Ollama does not have (404 "model ... not found") becomes
//! [`ProviderError::ModelNotFound`] listing the installed models.

use std::time::Duration;

use serde_json::{json, Value};

use super::http::{join_url, HttpClient, HttpError, HttpRequest};
use super::llm::{timeout_of, Llm};
use super::{BoxFuture, ProviderError, OLLAMA};
use crate::config::LlmConfig;

/// Deadline of the model list: `/api/models` must answer quickly when Ollama is down.
const LIST_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone, Debug)]
pub struct Ollama {
    http: HttpClient,
    base_url: String,
    timeout: Duration,
}

impl Ollama {
    pub fn new(base_url: &str, timeout: Duration) -> Result<Ollama, ProviderError> {
        Ok(Ollama {
            http: HttpClient::new().map_err(|e| ProviderError::http(&OLLAMA, e))?,
            base_url: base_url.trim_end_matches('/').to_string(),
            timeout,
        })
    }

    pub fn from_config(cfg: &LlmConfig) -> Result<Ollama, ProviderError> {
        Ollama::new(&cfg.ollama_base_url, timeout_of(cfg))
    }

    async fn tags(&self, timeout: Duration) -> Result<Vec<String>, ProviderError> {
        let req = HttpRequest::get(join_url(&self.base_url, "/api/tags")).timeout(timeout);
        let v = self
            .http
            .json(&req)
            .await
            .map_err(|e| ProviderError::http(&OLLAMA, e))?;
        Ok(model_names(&v))
    }

    async fn chat(
        &self,
        model: &str,
        system: Option<&str>,
        prompt: &str,
    ) -> Result<String, ProviderError> {
        let mut messages = Vec::new();
        if let Some(s) = system {
            messages.push(json!({"role": "system", "content": s}));
        }
        messages.push(json!({"role": "user", "content": prompt}));
        let body = json!({"model": model, "messages": messages, "stream": false});
        let req = HttpRequest::post(join_url(&self.base_url, "/api/chat"))
            .json(&body)
            .timeout(self.timeout);
        match self.http.json(&req).await {
            Ok(v) => text_of(&v, "/message/content"),
            Err(e) if e.status() == Some(404) && !mentions_model(&e) => {
                tracing::debug!(
                    service = "ollama",
                    "no /api/chat; falling back to /api/generate"
                );
                self.generate(model, system, prompt).await
            }
            Err(e) => Err(self.explain(model, e).await),
        }
    }

    async fn generate(
        &self,
        model: &str,
        system: Option<&str>,
        prompt: &str,
    ) -> Result<String, ProviderError> {
        let mut body = json!({"model": model, "prompt": prompt, "stream": false});
        if let Some(s) = system {
            body["system"] = json!(s);
        }
        let req = HttpRequest::post(join_url(&self.base_url, "/api/generate"))
            .json(&body)
            .timeout(self.timeout);
        match self.http.json(&req).await {
            Ok(v) => text_of(&v, "/response"),
            Err(e) => Err(self.explain(model, e).await),
        }
    }

    /// Turns a "model not found" answer into [`ProviderError::ModelNotFound`] with the installed list.
    async fn explain(&self, model: &str, e: HttpError) -> ProviderError {
        if e.status() == Some(404) && mentions_model(&e) {
            let installed = self.tags(LIST_TIMEOUT).await.unwrap_or_default();
            return ProviderError::ModelNotFound {
                service: OLLAMA.name,
                model: model.to_string(),
                installed,
                hint: format!("Pull it with `ollama pull {model}` or choose an installed one."),
            };
        }
        ProviderError::http(&OLLAMA, e)
    }
}

fn mentions_model(e: &HttpError) -> bool {
    e.body()
        .map(|b| b.to_ascii_lowercase())
        .is_some_and(|b| b.contains("model") && b.contains("not found"))
}

fn text_of(v: &Value, pointer: &str) -> Result<String, ProviderError> {
    match v.pointer(pointer).and_then(Value::as_str) {
        Some(t) if !t.trim().is_empty() => Ok(t.to_string()),
        _ => Err(ProviderError::bad_answer(
            OLLAMA.name,
            match v.get("error").and_then(Value::as_str) {
                Some(err) => err.to_string(),
                None => "the answer has no text".to_string(),
            },
        )),
    }
}

fn model_names(v: &Value) -> Vec<String> {
    v.get("models")
        .and_then(Value::as_array)
        .map(|ms| {
            ms.iter()
                .filter_map(|m| m.get("name").or_else(|| m.get("model")))
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

impl Llm for Ollama {
    fn name(&self) -> &'static str {
        OLLAMA.name
    }

    fn complete<'a>(
        &'a self,
        model: &'a str,
        system: Option<&'a str>,
        prompt: &'a str,
    ) -> BoxFuture<'a, Result<String, ProviderError>> {
        Box::pin(self.chat(model, system, prompt))
    }

    fn list_models(&self) -> BoxFuture<'_, Result<Vec<String>, ProviderError>> {
        Box::pin(self.tags(self.timeout.min(Duration::from_secs(30))))
    }
}

/// Names of the models Ollama has installed (`GET /api/tags`, 3 s deadline).
pub async fn list_models(cfg: &LlmConfig) -> Result<Vec<String>, ProviderError> {
    Ollama::new(&cfg.ollama_base_url, timeout_of(cfg))?
        .tags(LIST_TIMEOUT)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::fake::{FakeServer, Reply};
    use crate::providers::llm;

    fn ollama(base: &str) -> Ollama {
        Ollama::new(base, Duration::from_secs(5)).unwrap()
    }

    const TAGS: &str = r#"{"models":[{"name":"llama3.1:8b"},{"name":"mistral:latest"}]}"#;

    #[tokio::test]
    async fn chat_answers_and_the_script_is_cleaned() {
        let server = FakeServer::start(|req| match req.path.as_str() {
            "/api/chat" => {
                let body: Value = serde_json::from_slice(&req.body).unwrap();
                assert_eq!(body["stream"], false);
                assert_eq!(body["model"], "llama3.1:8b");
                assert_eq!(body["messages"][0]["role"], "user");
                Reply::json(200, r#"{"message":{"role":"assistant","content":"**Narrator:** Octopuses have three hearts.\n\nThey have blue blood.\n\nExtra."},"done":true}"#)
            }
            _ => Reply::status(404),
        })
        .await;
        let o = ollama(&server.url(""));
        let req = llm::ScriptRequest {
            subject: "octopus",
            paragraphs: 2,
            custom_prompt: None,
            language: None,
        };
        let script = llm::write_script(&o, "llama3.1:8b", &req).await.unwrap();
        assert_eq!(
            script,
            "Octopuses have three hearts.\n\nThey have blue blood."
        );
        assert_eq!(server.hits("/api/chat"), 1);
    }

    #[tokio::test]
    async fn a_missing_chat_endpoint_falls_back_to_generate() {
        let server = FakeServer::start(|req| match req.path.as_str() {
            "/api/chat" => Reply::text(404, "404 page not found"),
            "/api/generate" => {
                let body: Value = serde_json::from_slice(&req.body).unwrap();
                assert_eq!(body["stream"], false);
                assert!(body["prompt"].as_str().unwrap().contains("hello"));
                Reply::json(200, r#"{"response":"[\"a\",\"b\"]","done":true}"#)
            }
            _ => Reply::status(404),
        })
        .await;
        let o = ollama(&server.url(""));
        assert_eq!(
            o.complete("m", None, "hello").await.unwrap(),
            "[\"a\",\"b\"]"
        );
        assert_eq!(server.hits("/api/chat"), 1);
        assert_eq!(server.hits("/api/generate"), 1);
    }

    #[tokio::test]
    async fn a_model_that_is_not_installed_names_the_installed_ones() {
        let server = FakeServer::start(|req| match req.path.as_str() {
            "/api/chat" => Reply::json(
                404,
                r#"{"error":"model \"nope:1b\" not found, try pulling it first"}"#,
            ),
            "/api/tags" => Reply::json(200, TAGS),
            _ => Reply::status(404),
        })
        .await;
        let o = ollama(&server.url(""));
        let err = o.complete("nope:1b", None, "hi").await.unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, ProviderError::ModelNotFound { .. }),
            "{err:?}"
        );
        assert!(
            msg.contains("nope:1b")
                && msg.contains("llama3.1:8b")
                && msg.contains("mistral:latest"),
            "{msg}"
        );
        assert!(!err.retryable());
        assert_eq!(server.hits("/api/generate"), 0);
        assert_eq!(
            o.list_models().await.unwrap(),
            vec!["llama3.1:8b", "mistral:latest"]
        );
    }

    #[tokio::test]
    async fn ollama_down_is_a_retryable_connection_refused_naming_the_url() {
        let base = crate::providers::fake::closed_port_url();
        let o = ollama(&base);
        let err = o.complete("m", None, "hi").await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("Ollama connection refused at {base}. Is Ollama running?")
        );
        assert!(err.retryable());
        assert_eq!(err.code(), "ConnectionRefused");
        let cfg = LlmConfig {
            ollama_base_url: base,
            ..LlmConfig::default()
        };
        assert!(list_models(&cfg).await.is_err());
    }
}
