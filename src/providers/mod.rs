//! Clients of outside services (Ollama, OpenAI-compatible servers, Pexels, TikTok TTS), each behind a
//! pipeline trait so the offline providers can stand in for them.

pub mod http;
pub mod ollama;
