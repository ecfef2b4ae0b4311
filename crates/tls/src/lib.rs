//! # tls
//!
//! TLS for every link of the cluster, in one place: reading PEM files (a CA to trust, a
//! certificate chain and its key), rustls client and server configs built on the one crypto
//! provider the workspace compiles (aws-lc-rs, which the `s3` feature's HTTP client already
//! brings: no second stack), and PostgreSQL's connector over tokio-rustls ([`PostgresTls`]).
//!
//! Verification is never optional here: a client config trusts exactly the CA file it is given
//! (no system roots, so a certificate from any other CA is refused) and checks the server's
//! name or IP address against the certificate, as `sslmode=verify-full` does. It owns no socket
//! and no listener: the api serves with [`server_config`], the worker, the NATS client, the
//! PostgreSQL stores and the admin CLI connect with [`client_config`].

mod files;
mod postgres_tls;

pub use files::{ca_certificates, certificate_chain, client_config, private_key, provider, server_config, TlsError};
pub use postgres_tls::PostgresTls;
/// The config types, so that users need not depend on rustls to name them.
pub use rustls::{ClientConfig, ServerConfig};
