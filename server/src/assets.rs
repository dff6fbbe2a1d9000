//! The web pages and their static files: built into the binary from `web/`, or read from
//! `--web-dir` when one is set (for working on the pages without rebuilding).

use std::borrow::Cow;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue};
use axum::response::{Html, IntoResponse, Response};
use televisit_protocol::ErrorCode;

use crate::error::ApiError;
use crate::SharedState;

/// The `web/` folder at build time.
#[derive(rust_embed::Embed)]
#[folder = "../web"]
struct BuiltIn;

/// A file of the web folder (`call.html`, `static/call.js`), from `--web-dir` or the binary.
pub async fn read(state: &SharedState, name: &str) -> Option<Cow<'static, [u8]>> {
    match &state.config.web_dir {
        Some(dir) => tokio::fs::read(dir.join(name)).await.ok().map(Cow::Owned),
        None => BuiltIn::get(name).map(|file| file.data),
    }
}

/// A page of the web folder as HTML.
pub async fn page(state: &SharedState, name: &str) -> Response {
    match read(state, name).await {
        Some(body) => Html(body).into_response(),
        None => ApiError::internal(format!("web page {name} is missing")).into_response(),
    }
}

/// `GET /static/{*path}`: a script, style or image of the web folder.
pub async fn static_file(State(state): State<SharedState>, Path(path): Path<String>) -> Response {
    // `..` never names a built-in file; for --web-dir it must not leave the folder.
    if path.split('/').any(|part| part == ".." || part.is_empty()) {
        return ApiError::new(ErrorCode::NotFound, "no such file").into_response();
    }
    let name = format!("static/{path}");
    match read(&state, &name).await {
        Some(body) => {
            let mime = mime_guess::from_path(&name).first_or_octet_stream();
            let content_type = HeaderValue::from_str(mime.as_ref()).expect("a MIME type is a header value");
            ([(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        None => ApiError::new(ErrorCode::NotFound, "no such file").into_response(),
    }
}
