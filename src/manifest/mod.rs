//! Loading manifests: which files count, the YAML codec, validation.

pub mod codec;
