//! The core's network edges: the HTTP API client and the signaling transports (the WebSocket and
//! the HTTP fallback). TLS is rustls with the platform's certificate verifier (the system store on
//! desktop, the OS verifier on phones).

pub mod api_client;
pub mod http_signaling;
pub mod signaling;

use std::sync::{Arc, OnceLock};

/// The TLS client configuration shared by HTTP and WebSocket connections.
pub fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
                .with_safe_default_protocol_versions()
                .expect("ring supports the default TLS versions");
            let verifier = rustls_platform_verifier::Verifier::new(provider).expect("platform verifier");
            Arc::new(
                config
                    .dangerous() // not dangerous: this installs the platform's own verifier
                    .with_custom_certificate_verifier(Arc::new(verifier))
                    .with_no_client_auth(),
            )
        })
        .clone()
}
