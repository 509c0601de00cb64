//! What the TLS unit tests share: an in-process rustls server, a stack trusting a test CA,
//! and loops that drive the socket the way the driver does.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use embedded_nal::{nb, TcpClientStack};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use rustls::server::WebPkiClientVerifier;
use rustls::{
    RootCertStore, ServerConfig, ServerConnection, StreamOwned, SupportedProtocolVersion,
};
pub(crate) use satmqtt_test_pki::{Ca, Leaf, Purpose, Validity};

use super::{TlsConfig, TlsError, TlsSocket, TlsStack};
use crate::net::wait_socket;

/// Upper bound for anything that should take milliseconds.
pub(crate) const PATIENCE: Duration = Duration::from_secs(10);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Trust in `ca` alone, for the server's client-certificate check.
fn roots(ca: &Ca) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.der.clone()).expect("CA as root");
    Arc::new(roots)
}

pub(crate) fn server_config(
    leaf: &Leaf,
    versions: &[&'static SupportedProtocolVersion],
    client_ca: Option<&Ca>,
) -> ServerConfig {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .expect("server versions");
    let builder = match client_ca {
        Some(ca) => builder.with_client_cert_verifier(
            WebPkiClientVerifier::builder_with_provider(roots(ca), provider())
                .build()
                .expect("client verifier"),
        ),
        None => builder.with_no_client_auth(),
    };
    builder
        .with_single_cert(
            vec![leaf.der.clone()],
            PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("leaf key"),
        )
        .expect("server config")
}

pub(crate) type Server = StreamOwned<ServerConnection, TcpStream>;

/// A one-connection TCP server on 127.0.0.1 running `script` on the accepted stream.
pub(crate) fn serve_raw(
    script: impl FnOnce(TcpStream) + Send + 'static,
) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let handle = thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
        script(stream);
    });
    (addr, handle)
}

/// A one-connection rustls server running `script` (the handshake happens on first I/O).
pub(crate) fn serve(
    config: ServerConfig,
    script: impl FnOnce(&mut Server) + Send + 'static,
) -> (SocketAddr, JoinHandle<()>) {
    let config = Arc::new(config);
    serve_raw(move |tcp| {
        let conn = ServerConnection::new(config).expect("server connection");
        let mut stream = StreamOwned::new(conn, tcp);
        script(&mut stream);
    })
}

/// Files for a [`TlsConfig`], deleted with the guard.
pub(crate) struct Files(pub(crate) tempfile::TempDir);

impl Files {
    pub(crate) fn new() -> Files {
        Files(tempfile::tempdir().expect("temp dir"))
    }

    pub(crate) fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.path().join(name);
        fs::write(&path, contents).expect("write test file");
        path
    }
}

/// A stack trusting `ca` (written to `files`) and checking `server_name`.
pub(crate) fn stack(files: &Files, ca: &Ca, server_name: &str) -> TlsStack {
    let cfg = TlsConfig {
        ca_file: Some(files.write("ca.crt", &ca.pem)),
        ..TlsConfig::new(server_name)
    };
    TlsStack::new(&cfg, Duration::from_secs(5)).expect("TLS stack")
}

/// Drives `connect` to completion the way the driver does, sleeping in poll between calls.
pub(crate) fn connect(stack: &mut TlsStack, addr: SocketAddr) -> (TlsSocket, Result<(), TlsError>) {
    let mut socket = stack.socket().expect("socket");
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        match stack.connect(&mut socket, addr) {
            Ok(()) => return (socket, Ok(())),
            Err(nb::Error::WouldBlock) => {
                wait_socket(Some(&socket), Duration::from_millis(100), false, None).expect("poll");
            }
            Err(nb::Error::Other(e)) => return (socket, Err(e)),
        }
    }
    panic!("connect still in progress after {PATIENCE:?}");
}

pub(crate) fn connected(stack: &mut TlsStack, addr: SocketAddr) -> TlsSocket {
    let (socket, result) = connect(stack, addr);
    if let Err(e) = result {
        panic!("connect failed: {e}");
    }
    socket
}

pub(crate) fn send_all(stack: &mut TlsStack, socket: &mut TlsSocket, bytes: &[u8]) {
    let mut sent = 0;
    let deadline = Instant::now() + PATIENCE;
    while sent < bytes.len() {
        assert!(Instant::now() < deadline, "send stalled");
        match stack.send(socket, &bytes[sent..]) {
            Ok(n) => sent += n,
            Err(nb::Error::WouldBlock) => {
                wait_socket(Some(&*socket), Duration::from_millis(100), true, None).expect("poll");
            }
            Err(nb::Error::Other(e)) => panic!("send: {e}"),
        }
    }
}

/// Receives into a `chunk`-byte buffer until `Ok(0)`, `want` bytes, or an error.
pub(crate) fn receive(
    stack: &mut TlsStack,
    socket: &mut TlsSocket,
    want: usize,
    chunk: usize,
) -> Result<Vec<u8>, TlsError> {
    let mut got = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while got.len() < want {
        assert!(Instant::now() < deadline, "receive stalled after {got:?}");
        let mut buf = vec![0; chunk];
        match stack.receive(socket, &mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(nb::Error::WouldBlock) => {
                wait_socket(Some(&*socket), Duration::from_millis(100), false, None).expect("poll");
            }
            Err(nb::Error::Other(e)) => return Err(e),
        }
    }
    Ok(got)
}

pub(crate) fn failure(stack: &mut TlsStack, addr: SocketAddr) -> (TlsSocket, TlsError) {
    match connect(stack, addr) {
        (socket, Err(e)) => (socket, e),
        (_, Ok(())) => panic!("the handshake succeeded"),
    }
}

pub(crate) const CONNECT: [u8; 4] = [0x10, 0x02, 0x00, 0x00];
pub(crate) const CONNACK: [u8; 5] = [0x20, 0x03, 0x00, 0x00, 0x00];

/// Server script: reads CONNECT, answers CONNACK, then expects the client's close_notify.
pub(crate) fn echo_then_expect_close_notify(server: &mut Server) {
    let mut connect = [0; 4];
    server.read_exact(&mut connect).expect("server read");
    assert_eq!(connect, CONNECT);
    server.write_all(&CONNACK).expect("server write");
    server.flush().expect("server flush");
    let mut rest = [0; 1];
    // Ok(0) only after a close_notify; a bare TCP close is UnexpectedEof.
    assert_eq!(server.read(&mut rest).expect("clean close"), 0);
}

/// A broker with a certificate for `names` from `ca`, speaking `version` only, that answers
/// one CONNECT with CONNACK and expects close_notify.
pub(crate) fn serve_echo(
    ca: &Ca,
    names: &[&str],
    version: &'static SupportedProtocolVersion,
) -> (SocketAddr, JoinHandle<()>) {
    let leaf = ca.leaf(names, Purpose::Server, Validity::Current);
    serve(
        server_config(&leaf, &[version], None),
        echo_then_expect_close_notify,
    )
}

/// Sends CONNECT, expects CONNACK, closes (close_notify) and waits for the broker's checks.
pub(crate) fn exchange_and_close(
    stack: &mut TlsStack,
    mut socket: TlsSocket,
    server: JoinHandle<()>,
) {
    send_all(stack, &mut socket, &CONNECT);
    assert_eq!(
        receive(stack, &mut socket, 5, 64).expect("receive"),
        CONNACK
    );
    stack.close(socket).expect("close");
    server.join().expect("server");
}

/// Server script for a handshake the client aborts: the server sees an error, not data.
pub(crate) fn expect_handshake_failure(server: &mut Server) {
    let mut buf = [0; 1];
    assert!(server.read(&mut buf).is_err(), "the handshake succeeded");
}
