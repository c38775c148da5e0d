//! The Skein gRPC API, package `skein.v1`: generated from `skein/v1/skein.proto`, where
//! every message and field is documented.

#![allow(clippy::all, missing_docs, rust_2018_idioms)]

/// Generated messages, client and server of `skein.v1`.
pub mod v1 {
    tonic::include_proto!("skein.v1");

    /// The encoded descriptor set, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("skein_descriptor");
}
