//! Test support for satmqtt: a real mosquitto per test, an independent subscriber, a kubelet-style
//! token directory and the `pod-publisher` binary run as a subprocess.
//!
//! The integration tests in `tests/` arrange a broker, act through the real binary and assert on what
//! an independent subscriber (`mosquitto_sub`) and the broker's own log saw. Nothing here links the
//! satmqtt crates: the binary is tested from the outside, exactly as a pod operator runs it.
//!
//! What this crate deliberately leaves out: network namespaces (smoltcp/TAP tests); they come
//! with the tests that need them. The TCP fault proxy ([`FaultProxy`]) cuts connections at
//! seeded random byte offsets.
//!
//! For K8S-SAT enhanced authentication, [`Broker::start_k8s_sat`] loads a small mosquitto auth
//! plugin ([`plugin`], C source in `tests/plugin/`, compiled by the harness with gcc). For what no
//! real broker can be made to do, [`FakeBroker`] runs a script of raw bytes per connection, or sits
//! between client and mosquitto and rewrites the broker's packets; [`mqtt`] frames and builds the
//! packets for both, independently of satmqtt.
//!
//! Every wait in here is bounded in time and polls a condition; none is a bare sleep. A missing
//! `mosquitto` installation is a panic that names the package to install, never a silent skip.
//!
//! ```no_run
//! use std::time::Duration;
//! use satmqtt_tests::{fake_jwt, Broker, Publisher, Sequence, Subscriber, TokenDir};
//!
//! let token = fake_jwt(3600);
//! let broker = Broker::start(&token);
//! let tokens = TokenDir::new();
//! tokens.write(&token);
//! let subscriber = Subscriber::start(&broker, "sampletopic");
//! let mut publisher = Publisher::builder()
//!     .broker(&broker)
//!     .token_file(tokens.path())
//!     .client_id("doc-example")
//!     .args(["--count", "3", "--interval-ms", "0"])
//!     .spawn();
//! let status = publisher.wait_timeout(Duration::from_secs(30)).expect("publisher did not exit");
//! assert!(status.success());
//! let payloads = subscriber.sync(Duration::from_secs(5));
//! Sequence::parse("samplepayload", &payloads).assert_contiguous(0, 3);
//! ```

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod bed;
pub mod broker;
pub mod deploy;
pub mod expect;
pub mod fake_broker;
pub mod image;
pub mod mqtt;
pub mod plugin;
pub mod proxy;
pub mod publisher;
pub mod sequence;
pub mod static_build;
pub mod subscriber;
pub mod tls_certs;
pub mod token;
pub mod tools;
pub mod wait;

pub use bed::TestBed;
pub use broker::{Broker, BrokerLog, Connect, SatDecision};
pub use fake_broker::{FakeBroker, Step};
pub use proxy::{FaultProxy, Faults, ProxyStats};
pub use publisher::{Publisher, PublisherBuilder};
pub use sequence::Sequence;
pub use subscriber::{Received, Subscriber};
pub use tls_certs::{TestPki, TlsListener};
pub use token::{assert_no_token_leak, fake_jwt, jwt_exp, secret_fragments, TokenDir};

/// Username every satmqtt client presents: the broker's `$sat` convention (service-account token).
pub const SAT_USERNAME: &str = "$sat";
/// Username of the independent subscriber in every test broker's password file.
pub const SUBSCRIBER_USERNAME: &str = "subscriber";
/// Password of the independent subscriber.
pub const SUBSCRIBER_PASSWORD: &str = "subpass";
