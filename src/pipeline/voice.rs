//! Voice stage (placeholder until the pipeline lands): MoneyPrinter voice ids.

/// Whether `id` is a voice id this build can speak.
pub fn is_known_voice(id: &str) -> bool {
    id.starts_with("en_") || id.starts_with("fr_") || id.starts_with("de_") || id.starts_with("es_")
}
