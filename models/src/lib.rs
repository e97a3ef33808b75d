#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod build;
pub mod error;
pub mod format;
pub mod keys;
pub mod manifest;
pub mod verify;

pub use build::build_bundle;
pub use error::BundleError;
pub use keys::{KeyError, KeyId, PublicKey, SigningKey, TrustedKeys};
pub use manifest::Manifest;
pub use verify::{
    verify_bundle, verify_head, verify_path, VerifiedBundle, VerifiedHead, VerifyOptions,
};
