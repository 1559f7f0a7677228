//! Moving images into a registry. An import reads the source image's manifests (an index with every child),
//! gathers the blobs they reference, brings the bytes the store lacks (none for a source on this server: the
//! target links what the source holds), and writes the whole image into the target in one transaction.

pub mod artifact;
pub mod error;
pub mod local;
pub mod progress;
pub mod remote;
pub mod spec;

pub use artifact::Artifact;
pub use error::ImportError;
pub use progress::Progress;
pub use spec::{ImageRef, ImportTargets};
