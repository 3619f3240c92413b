//! Our web page at `/`: one HTML document, a stylesheet and a script, compiled into the binary
//! (`include_str!`), so the page needs no build step and nothing from outside the daemon (it works
//! offline). The voice list is filled in from the voice catalogue once, at the first request.
//!
//! Invariants: assets are served with a Content-Security-Policy that allows only this origin (no
//! inline script, no third-party anything); an unknown asset name is a 404 in the API's error shape.

use std::sync::OnceLock;

use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use super::error::ApiError;
use super::routes::{full, Body};

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   media-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; \
                   frame-ancestors 'none'";

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The page with the voice catalogue's `<option>`s in place.
fn index() -> &'static str {
    static PAGE: OnceLock<String> = OnceLock::new();
    PAGE.get_or_init(|| {
        let options: String = crate::voices::VOICES
            .iter()
            .map(|v| {
                format!(
                    "<option value=\"{}\">{} ({})</option>",
                    escape(v.id),
                    escape(v.label),
                    escape(v.id)
                )
            })
            .collect();
        INDEX.replace("{{VOICES}}", &options)
    })
}

fn asset(body: &'static str, content_type: &'static str) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = StatusCode::OK;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// `GET /`.
pub fn page() -> Result<Response<Body>, ApiError> {
    Ok(asset(index(), "text/html; charset=utf-8"))
}

/// `GET /assets/:name`.
pub fn assets(name: &str) -> Result<Response<Body>, ApiError> {
    match name {
        "app.js" => Ok(asset(APP_JS, "text/javascript; charset=utf-8")),
        "app.css" => Ok(asset(APP_CSS, "text/css; charset=utf-8")),
        _ => Err(ApiError::NoRoute {
            method: "GET".into(),
            path: format!("/assets/{name}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_lists_every_voice_and_loads_only_its_own_assets() {
        let page = index();
        assert!(!page.contains("{{"));
        for v in crate::voices::VOICES {
            assert!(
                page.contains(&format!("<option value=\"{}\">", v.id)),
                "{}",
                v.id
            );
        }
        for needle in ["http://", "https://", "//cdn", "<script>", " style=\""] {
            assert!(!page.contains(needle), "the page holds `{needle}`");
        }
        assert!(page.contains("src=\"/assets/app.js\""));
        for css_or_js in [APP_JS, APP_CSS] {
            assert!(!css_or_js.contains("http://") && !css_or_js.contains("https://"));
            assert!(!css_or_js.contains("@import") && !css_or_js.contains("url("));
        }
    }

    #[test]
    fn every_form_control_has_a_label() {
        let page = index();
        let mut ids = Vec::new();
        for tag in ["<input ", "<select ", "<textarea "] {
            for part in page.split(tag).skip(1) {
                let id = part
                    .split("id=\"")
                    .nth(1)
                    .and_then(|s| s.split('"').next())
                    .unwrap_or("");
                assert!(
                    !id.is_empty(),
                    "a control without an id: {tag}{}",
                    &part[..40.min(part.len())]
                );
                ids.push(id.to_string());
            }
        }
        assert!(ids.len() >= 14, "{ids:?}");
        for id in ids {
            assert!(
                page.contains(&format!("<label for=\"{id}\"")),
                "no label for #{id}"
            );
        }
    }
}
