//! Generated gRPC code for wick's two services, and the trace context that
//! crosses them.
//!
//! - `wick.v1.Generation` (`generation.proto`): the public API, served by the
//!   scheduler. The gateway and gRPC users are its clients.
//! - `wick.v1.Worker` (`worker.proto`): the internal API between the scheduler
//!   and each worker.
//! - [`trace_context`]: W3C trace context in gRPC metadata and in the
//!   `Admit` command, shared by the gateway, the scheduler and the worker.
//!
//! Both services live in the `wick.v1` package, so all messages are in [`v1`].

pub mod trace_context;

pub mod v1 {
    tonic::include_proto!("wick.v1");

    /// The encoded file descriptor set, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("wick_descriptor");
}
