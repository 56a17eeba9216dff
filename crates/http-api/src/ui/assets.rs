//! The UI's files, compiled into the binary. Each answer carries the UI's
//! Content-Security-Policy and a strong ETag (BLAKE3 of the bytes), and is
//! revalidated on every load (`no-cache`), so a new binary is picked up at once.

use std::sync::LazyLock;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse};

struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset { name: "index.html", content_type: "text/html; charset=utf-8", bytes: include_bytes!("assets/index.html") },
    Asset { name: "app.js", content_type: "text/javascript; charset=utf-8", bytes: include_bytes!("assets/app.js") },
    Asset { name: "api.js", content_type: "text/javascript; charset=utf-8", bytes: include_bytes!("assets/api.js") },
    Asset { name: "dom.js", content_type: "text/javascript; charset=utf-8", bytes: include_bytes!("assets/dom.js") },
    Asset {
        name: "trash.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("assets/trash.js"),
    },
    Asset {
        name: "storage.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("assets/storage.js"),
    },
    Asset { name: "app.css", content_type: "text/css; charset=utf-8", bytes: include_bytes!("assets/app.css") },
    Asset { name: "icon.svg", content_type: "image/svg+xml", bytes: include_bytes!("assets/icon.svg") },
];

/// `"<blake3 hex, 32 chars>"` of each asset, in the order of [`ASSETS`].
static ETAGS: LazyLock<Vec<String>> =
    LazyLock::new(|| ASSETS.iter().map(|a| format!("\"{}\"", &blake3::hash(a.bytes).to_hex()[..32])).collect());

/// The asset's response (200, or 304 if the browser's copy is current); `None` if there is no such asset.
pub fn serve(req: &HttpRequest, name: &str) -> Option<HttpResponse> {
    let i = ASSETS.iter().position(|a| a.name == name)?;
    let asset = &ASSETS[i];
    let etag = &ETAGS[i];
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut res = if fresh { HttpResponse::NotModified() } else { HttpResponse::Ok() };
    res.insert_header((header::CONTENT_SECURITY_POLICY, super::UI_CSP))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::ETAG, HeaderValue::from_str(etag).ok()?))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"));
    Some(if fresh { res.finish() } else { res.content_type(asset.content_type).body(asset.bytes) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_the_page_names_is_served() {
        let html = std::str::from_utf8(ASSETS[0].bytes).unwrap();
        for part in html.split("/ui/").skip(1) {
            let name: String = part.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '.').collect();
            assert!(ASSETS.iter().any(|a| a.name == name), "index.html names /ui/{name}, which is not embedded");
        }
    }

    #[test]
    fn every_module_a_script_imports_is_served() {
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let text = std::str::from_utf8(a.bytes).unwrap();
            for part in text.split(" from './").skip(1) {
                let name: String = part.chars().take_while(|c| *c != '\'').collect();
                assert!(ASSETS.iter().any(|x| x.name == name), "{} imports ./{name}, which is not embedded", a.name);
            }
        }
    }

    #[test]
    fn no_inline_script_and_nothing_from_elsewhere() {
        for a in ASSETS {
            let text = String::from_utf8_lossy(a.bytes);
            // The SVG's namespace is a name, not a fetch.
            let text = text.replace("http://www.w3.org/2000/svg", "");
            assert!(!text.contains("http://") && !text.contains("https://"), "{} names another origin", a.name);
            assert!(
                !text.contains("innerHTML") && !text.contains("eval("),
                "{} builds code or markup from text",
                a.name
            );
        }
        let html = std::str::from_utf8(ASSETS[0].bytes).unwrap();
        assert!(!html.contains("<script>") && !html.contains("javascript:"), "inline script in index.html");
    }
}
