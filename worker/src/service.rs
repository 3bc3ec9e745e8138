//! The worker's gRPC service (Describe, Run, health) around an [`crate::Engine`].
