//! HTTP: the OCI Distribution API on `/v2`, the Docker token service on `/oauth2`, TLS with a local CA,
//! routing by `Host`, and the classification of every request's origin and principal at the edge.

pub mod access_log;
pub mod acr;
pub mod arm;
pub mod audit_log;
pub mod change_watch;
pub mod config;
pub mod connection;
pub mod context;
pub mod data_endpoint;
pub mod datadir;
pub mod edge;
pub mod endpoints;
pub mod gc;
pub mod health;
pub mod identities;
pub mod jobs;
pub mod keys;
pub mod limits;
pub mod listener;
pub mod logins;
pub mod monitor;
pub mod notice;
pub mod oci;
pub mod operator;
pub mod registries;
pub mod secrets;
pub mod serve_lock;
pub mod state;
pub mod storage;
pub mod tls;
pub mod token;

pub use config::ServeConfig;
pub use listener::serve;
