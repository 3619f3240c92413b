//! OpenAI-compatible servers (OpenAI, vLLM, llama.cpp, LM Studio, ...): `POST /v1/chat/completions`
//! and `GET /v1/models`, with `Authorization: Bearer <key>` when a key is set.
//!
//! The key comes from the environment variable named by `llm.openai_api_key_env`, is held as a
//! [`Secret`] and is scrubbed from any answer an error quotes.

use std::time::Duration;

use serde_json::{json, Value};

use super::http::{join_url, HttpClient, HttpError, HttpRequest};
use super::llm::{timeout_of, Llm};
use super::{BoxFuture, ProviderError, Secret, OPENAI};
use crate::config::LlmConfig;

#[derive(Clone, Debug)]
pub struct OpenAi {
    http: HttpClient,
    base_url: String,
    key: Option<Secret>,
    timeout: Duration,
}

impl OpenAi {
    /// `base_url` with or without the trailing `/v1`.
    pub fn new(
        base_url: &str,
        key: Option<Secret>,
        timeout: Duration,
    ) -> Result<OpenAi, ProviderError> {
        let base = base_url.trim_end_matches('/');
        Ok(OpenAi {
            http: HttpClient::new().map_err(|e| ProviderError::http(&OPENAI, e))?,
            base_url: base.strip_suffix("/v1").unwrap_or(base).to_string(),
            key: key.filter(|k| !k.is_empty()),
            timeout,
        })
    }

    /// Reads the key from the environment variable `llm.openai_api_key_env` (absent: no header).
    pub fn from_config(cfg: &LlmConfig) -> Result<OpenAi, ProviderError> {
        OpenAi::new(&cfg.openai_base_url, api_key(cfg), timeout_of(cfg))
    }

    fn request(&self, req: HttpRequest) -> HttpRequest {
        match &self.key {
            Some(k) => req.secret_header("authorization", format!("Bearer {}", k.expose())),
            None => req,
        }
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
        let req = self.request(
            HttpRequest::post(join_url(&self.base_url, "/v1/chat/completions"))
                .json(&json!({"model": model, "messages": messages}))
                .timeout(self.timeout),
        );
        match self.http.json(&req).await {
            Ok(v) => match v
                .pointer("/choices/0/message/content")
                .and_then(Value::as_str)
            {
                Some(t) if !t.trim().is_empty() => Ok(t.to_string()),
                _ => Err(ProviderError::bad_answer(
                    OPENAI.name,
                    "the answer has no choices[0].message.content",
                )),
            },
            Err(e) if is_unknown_model(&e) => Err(ProviderError::ModelNotFound {
                service: OPENAI.name,
                model: model.to_string(),
                installed: self.models().await.unwrap_or_default(),
                hint: "Set aiModel or llm.openai_model to one of them.".into(),
            }),
            Err(e) => Err(ProviderError::http(&OPENAI, e)),
        }
    }

    async fn models(&self) -> Result<Vec<String>, ProviderError> {
        let req = self.request(
            HttpRequest::get(join_url(&self.base_url, "/v1/models"))
                .timeout(self.timeout.min(Duration::from_secs(30))),
        );
        let v = self
            .http
            .json(&req)
            .await
            .map_err(|e| ProviderError::http(&OPENAI, e))?;
        Ok(v.get("data")
            .and_then(Value::as_array)
            .map(|ms| {
                ms.iter()
                    .filter_map(|m| m.get("id").and_then(Value::as_str))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default())
    }
}

fn is_unknown_model(e: &HttpError) -> bool {
    matches!(e.status(), Some(404) | Some(400))
        && e.body().map(str::to_ascii_lowercase).is_some_and(|b| {
            b.contains("model_not_found")
                || (b.contains("model")
                    && (b.contains("not found") || b.contains("does not exist")))
        })
}

/// The API key, from the environment variable named by `llm.openai_api_key_env`.
pub fn api_key(cfg: &LlmConfig) -> Option<Secret> {
    std::env::var(&cfg.openai_api_key_env)
        .ok()
        .map(Secret::from)
}

impl Llm for OpenAi {
    fn name(&self) -> &'static str {
        OPENAI.name
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
        Box::pin(self.models())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::fake::{FakeServer, Reply};

    const KEY: &str = "sk-test-0123456789abcdef";

    #[tokio::test]
    async fn chat_completions_send_the_bearer_key() {
        let server = FakeServer::start(|req| {
            let got = req
                .header("authorization")
                .unwrap_or("")
                .trim_start_matches("Bearer ");
            if got != KEY {
                // Real servers echo (part of) the key they refused.
                return Reply::json(
                    401,
                    &format!(r#"{{"error":{{"message":"Incorrect API key provided: {got}"}}}}"#),
                );
            }
            match req.path.as_str() {
                "/v1/chat/completions" => {
                    let body: Value = serde_json::from_slice(&req.body).unwrap();
                    assert_eq!(body["model"], "gpt-4o-mini");
                    assert_eq!(body["messages"][0]["role"], "system");
                    Reply::json(
                        200,
                        r#"{"choices":[{"message":{"role":"assistant","content":"Hi."}}]}"#,
                    )
                }
                "/v1/models" => {
                    Reply::json(200, r#"{"data":[{"id":"gpt-4o-mini"},{"id":"local-7b"}]}"#)
                }
                _ => Reply::status(404),
            }
        })
        .await;
        let ai = OpenAi::new(
            &server.url("/v1/"),
            Some(Secret::from(KEY)),
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(
            ai.complete("gpt-4o-mini", Some("be brief"), "hello")
                .await
                .unwrap(),
            "Hi."
        );
        assert_eq!(
            ai.list_models().await.unwrap(),
            vec!["gpt-4o-mini", "local-7b"]
        );

        // A wrong key: 401, not retryable, and the key the server echoed is not in the message.
        let wrong = OpenAi::new(
            &server.url(""),
            Some(Secret::from("sk-wrong-key-42")),
            Duration::from_secs(5),
        )
        .unwrap();
        let err = wrong
            .complete("gpt-4o-mini", None, "hello")
            .await
            .unwrap_err();
        assert!(!err.retryable());
        assert_eq!(err.code(), "Unauthorized");
        let shown = format!("{err} {err:?} {wrong:?}");
        assert!(
            !shown.contains("sk-wrong-key-42") && !shown.contains(KEY),
            "{shown}"
        );
        assert!(shown.contains("llm.openai_api_key_env"), "{shown}");
    }
}
