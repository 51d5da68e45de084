//! Encryption of secrets at rest under the master key.
