//! Gateway settings, filled in by the `wick` binary from its flags.

use std::net::SocketAddr;
use std::time::Duration;

use crate::GatewayError;

/// Settings of one gateway process. `Default` gives the documented defaults,
/// which suit a gateway and a scheduler on one host.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Address the HTTP server binds. Default `127.0.0.1:8080`.
    pub http_addr: SocketAddr,
    /// URL of the scheduler's gRPC endpoint. Default `http://127.0.0.1:50051`.
    pub scheduler_url: String,
    /// Maximum request body, in bytes. A larger body gets 413. Default 1 MiB,
    /// which fits a maximal prompt (6144 four-byte characters, 24 KiB) and
    /// conversations of dozens of long messages.
    pub max_body_bytes: usize,
    /// Time allowed for one request from its arrival to its last byte. Past
    /// it, the request ends with 408, or with an SSE error event once
    /// streaming. The scheduler gets the same deadline as the gRPC timeout.
    /// Default 300 s.
    pub request_timeout: Duration,
    /// Interval between SSE keep-alive comments while no token arrives, for
    /// example while the request waits in the scheduler's queue. It also
    /// bounds how long a streaming request waits for an early error before
    /// the SSE headers go out. Default 5 s.
    pub sse_keep_alive: Duration,
    /// Accepted API keys, sent by clients as `Authorization: Bearer KEY`.
    /// Empty turns authentication off. Default empty.
    pub api_keys: Vec<String>,
    /// Interval between readiness checks of the scheduler. Default 2 s.
    pub readiness_poll_interval: Duration,
    /// Service name asked in the scheduler's `grpc.health.v1` Check. The
    /// scheduler reports it SERVING while at least one worker is ready.
    /// Default `wick.v1.Generation`.
    pub health_service: String,
    /// Timeout of one connection attempt to the scheduler. Default 2 s.
    pub connect_timeout: Duration,
    /// Time that open requests, long SSE streams included, get to finish
    /// after the shutdown signal; past it they are cut and their
    /// generations cancelled. Default 30 s, the Kubernetes default
    /// termination grace period.
    pub shutdown_grace: Duration,
    /// `Retry-After` value sent with 429 and 503 responses when the
    /// scheduler gives none, in seconds. Default 1.
    pub retry_after_secs: u32,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            scheduler_url: "http://127.0.0.1:50051".to_string(),
            max_body_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(300),
            sse_keep_alive: Duration::from_secs(5),
            api_keys: Vec::new(),
            readiness_poll_interval: Duration::from_secs(2),
            health_service: "wick.v1.Generation".to_string(),
            connect_timeout: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(30),
            retry_after_secs: 1,
        }
    }
}

impl GatewayConfig {
    /// Checks the values that would break the server: zero durations (a
    /// zero keep-alive interval would send comments in a busy loop, and
    /// `tokio::time::interval` panics on a zero period) and a zero body
    /// limit.
    ///
    /// # Errors
    /// [`GatewayError::InvalidConfig`] naming the field and the rule.
    pub fn validate(&self) -> Result<(), GatewayError> {
        let durations = [
            ("request_timeout", self.request_timeout),
            ("sse_keep_alive", self.sse_keep_alive),
            ("readiness_poll_interval", self.readiness_poll_interval),
            ("connect_timeout", self.connect_timeout),
        ];
        for (field, value) in durations {
            if value.is_zero() {
                return Err(GatewayError::InvalidConfig {
                    field,
                    reason: "must be longer than zero".to_string(),
                });
            }
        }
        if self.max_body_bytes == 0 {
            return Err(GatewayError::InvalidConfig {
                field: "max_body_bytes",
                reason: "must be at least 1 byte".to_string(),
            });
        }
        if self.api_keys.iter().any(|key| key.trim().is_empty()) {
            return Err(GatewayError::InvalidConfig {
                field: "api_keys",
                reason: "must not contain an empty key".to_string(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert!(GatewayConfig::default().validate().is_ok());
    }

    #[test]
    fn zero_keep_alive_is_rejected() {
        let config = GatewayConfig {
            sse_keep_alive: Duration::ZERO,
            ..GatewayConfig::default()
        };
        let error = config.validate().unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid gateway setting sse_keep_alive: must be longer than zero"
        );
    }

    #[test]
    fn empty_api_key_is_rejected() {
        let config = GatewayConfig {
            api_keys: vec!["good".to_string(), " ".to_string()],
            ..GatewayConfig::default()
        };
        assert!(config.validate().is_err());
    }
}
