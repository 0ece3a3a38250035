//! What can go wrong talking to etcd, by kind, each with its cause.

use std::time::Duration;

/// An error of the fleet coordinator or of a fleet-wide read.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// etcd refused or failed a call.
    #[cfg(feature = "etcd")]
    #[error("{0}")]
    Etcd(#[from] etcd_client::Error),
    /// A call got no answer within its timeout.
    #[error("no answer within the call's timeout")]
    Elapsed(#[from] tokio::time::error::Elapsed),
    /// A member did not answer the connection.
    #[error("{url}: no answer")]
    Unreachable {
        /// The member's address.
        url: String,
    },
    /// A member refused the connection.
    #[cfg(feature = "etcd")]
    #[error("{url}: {source}")]
    Connect {
        /// The member's address.
        url: String,
        /// What the client said.
        #[source]
        source: etcd_client::Error,
    },
    /// The lease's keepalive failed.
    #[error("keepalive: {0}")]
    Keepalive(&'static str),
    /// The keepalive got no answer.
    #[error("keepalive: no answer within {0:?}")]
    KeepaliveTimeout(Duration),
    /// A claim (of a session, or of a pool with its members) failed.
    #[error("claim of {what}: {message}")]
    Claim {
        /// What was claimed.
        what: String,
        /// Why.
        message: String,
    },
    /// A listing of a prefix got no answer.
    #[error("reading {prefix}: no answer within {within:?}")]
    ReadTimeout {
        /// The prefix.
        prefix: String,
        /// The call's timeout.
        within: Duration,
    },
    /// The node could not join within its lease's length.
    #[error("cannot join the fleet over etcd (--etcd-endpoints {endpoints}): {source}")]
    Join {
        /// The endpoints given.
        endpoints: String,
        /// The last failure.
        #[source]
        source: Box<FleetError>,
    },
    /// `--coordinator etcd` on a build without the `etcd` feature.
    #[error("--coordinator etcd: built without the `etcd` feature")]
    NotBuilt,
}
