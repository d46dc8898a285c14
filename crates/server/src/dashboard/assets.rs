//! The page's files, compiled into the binary. They are plain files in
//! `assets/`, edited as they are served: no bundler, no build step, no
//! external font, script or style.

/// The page.
pub(super) const INDEX_HTML: &str = include_str!("assets/index.html");

/// Its script.
pub(super) const APP_JS: &str = include_str!("assets/app.js");

/// Its style.
pub(super) const STYLE_CSS: &str = include_str!("assets/style.css");

/// `Content-Type` of [`INDEX_HTML`].
pub(super) const HTML: &str = "text/html; charset=utf-8";

/// `Content-Type` of [`APP_JS`].
pub(super) const JS: &str = "text/javascript; charset=utf-8";

/// `Content-Type` of [`STYLE_CSS`].
pub(super) const CSS: &str = "text/css; charset=utf-8";
