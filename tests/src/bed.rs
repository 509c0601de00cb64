//! The arrangement most tests start from.

use crate::{fake_jwt, Broker, Publisher, PublisherBuilder, Subscriber, TokenDir};

/// A broker that accepts one fresh token, and a projected-volume directory holding that token.
pub struct TestBed {
    /// The token (a [`fake_jwt`] valid for an hour) the broker accepts for `$sat`.
    pub token: String,
    /// The broker.
    pub broker: Broker,
    /// The token directory; [`TokenDir::path`] holds [`TestBed::token`].
    pub tokens: TokenDir,
}

impl TestBed {
    /// Starts the broker and writes the token.
    pub fn new() -> TestBed {
        let token = fake_jwt(3600);
        let broker = Broker::start(&token);
        let tokens = TokenDir::new();
        tokens.write(&token);
        TestBed {
            token,
            broker,
            tokens,
        }
    }

    /// A subscriber on `topic`, already subscribed.
    pub fn subscribe(&self, topic: &str) -> Subscriber {
        Subscriber::start(&self.broker, topic)
    }

    /// A publisher pointed at this broker and token file, with `client_id`.
    pub fn publisher(&self, client_id: &str) -> PublisherBuilder {
        Publisher::builder()
            .broker(&self.broker)
            .token_file(self.tokens.path())
            .client_id(client_id)
    }
}

impl Default for TestBed {
    fn default() -> Self {
        TestBed::new()
    }
}
