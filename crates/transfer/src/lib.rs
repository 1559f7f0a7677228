//! Moving images into a registry. An import reads the source image's manifests (an index with every child),
//! gathers the blobs they reference, downloads every blob the target registry does not link already (none for a
//! source on this server: the target links what the source holds, on the gate's permit), and writes the whole
//! image into the target in one transaction.

pub mod archive;
pub mod artifact;
pub mod error;
pub mod local;
pub mod progress;
pub mod remote;
pub mod spec;
pub mod storage;

pub use artifact::Artifact;
pub use error::ImportError;
pub use progress::Progress;
pub use spec::{ImageRef, ImportTargets};
