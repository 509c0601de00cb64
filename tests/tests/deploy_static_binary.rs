//! The binary built as `deploy/Dockerfile` builds it: static (no interpreter, no shared
//! library), and it runs from an empty root (only the binary, the token and a CA file, as user
//! 65532) against a real mosquitto, resolving the broker's name through `/etc/resolv.conf`
//! (dnsmasq answering like a cluster's DNS) or `/etc/hosts`, as it must in the `FROM scratch`
//! image.
//!
//! Needs: mosquitto, dnsmasq (Debian `dnsmasq-base`) and root (chroot, DNS on port 53). A
//! missing one fails the test that needs it, naming it; nothing is skipped.

#![allow(clippy::unwrap_used)]

use std::fs;

use satmqtt_tests::deploy::*;
use satmqtt_tests::{
    assert_no_token_leak, fake_jwt, Broker, Publisher, Sequence, Subscriber, TestBed, TestPki,
};

#[test]
fn elf_linkage_tells_a_dynamic_executable() {
    // The dynamically linked debug build: an interpreter, and libc among its needs.
    let (interp, needed) = elf_linkage(Publisher::binary());
    assert!(interp && needed >= 1, "interp {interp}, needed {needed}");
}

#[test]
fn the_static_binary_needs_no_interpreter_and_no_shared_library() {
    assert_eq!(
        elf_linkage(static_binary()),
        (false, 0),
        "{}",
        static_binary().display()
    );
}

/// The token the pod sees, at the projected volume's path (the binary's default).
const POD_TOKEN: &str = "/var/run/secrets/tokens/mqtt-client-token";
/// Messages per empty-root run.
const ROOT_COUNT: u64 = 5;

#[test]
fn the_static_binary_publishes_over_tls_from_an_empty_root() {
    let pki = TestPki::new();
    let token = fake_jwt(3600);
    let broker = Broker::start_tls(&token, &pki.listener(false));
    let subscriber = Subscriber::start(&broker, "sampletopic");
    let root = EmptyRoot::new();
    root.add(POD_TOKEN, token.as_bytes(), 0o644);
    root.add(
        "/var/run/certs/ca.crt",
        &fs::read(pki.ca_file()).unwrap(),
        0o644,
    );
    assert_eq!(
        root.files(),
        [IMAGE_BINARY, "/var/run/certs/ca.crt", POD_TOKEN],
        "the root holds nothing else"
    );

    let port = broker.tls_port().unwrap().to_string();
    let count = ROOT_COUNT.to_string();
    let (status, log) = root.run(&[
        "--host",
        Broker::HOST,
        "--port",
        &port,
        "--tls",
        "--ca-file",
        "/var/run/certs/ca.crt",
        "--server-name",
        "localhost",
        "--client-id",
        "static-tls",
        "--count",
        &count,
        "--interval-ms",
        "0",
    ]);
    assert!(status.success(), "{status}\n{log}");
    Sequence::parse("samplepayload", &subscriber.sync(SYNC_TIMEOUT))
        .assert_contiguous(0, ROOT_COUNT);
    assert_eq!(broker.events().connects("static-tls").len(), 1);
    assert_no_token_leak("the static binary's log", &log, &token);
}

#[test]
fn the_static_binary_resolves_a_service_name_through_resolv_conf_in_an_empty_root() {
    // What the kubelet writes into every container, pod in namespace `satmqtt-test`.
    const FQDN: &str = "mqtt-broker.satmqtt-test.svc.cluster.local";
    let dns = Dns::start(FQDN);
    let bed = TestBed::new();
    let subscriber = bed.subscribe("sampletopic");
    let root = EmptyRoot::new();
    root.add(POD_TOKEN, bed.token.as_bytes(), 0o644);
    let resolv_conf = format!(
        "search satmqtt-test.svc.cluster.local svc.cluster.local cluster.local\n\
         nameserver {}\noptions ndots:5\n",
        dns.address
    );
    root.add("/etc/resolv.conf", resolv_conf.as_bytes(), 0o644);

    let port = bed.broker.port().to_string();
    let count = ROOT_COUNT.to_string();
    let (status, log) = root.run(&[
        "--host",
        "mqtt-broker",
        "--port",
        &port,
        "--client-id",
        "static-dns",
        "--count",
        &count,
        "--interval-ms",
        "0",
    ]);
    assert!(status.success(), "{status}\n{log}");
    assert!(log.contains(&format!("on 127.0.0.1:{port}")), "{log}");
    Sequence::parse("samplepayload", &subscriber.sync(SYNC_TIMEOUT))
        .assert_contiguous(0, ROOT_COUNT);
    let queries = dns.queries();
    assert!(queries.contains(&format!("A {FQDN}")), "{queries:?}");
}

#[test]
fn the_static_binary_resolves_a_name_from_etc_hosts_in_an_empty_root() {
    // Kubernetes `hostAliases` end up in /etc/hosts; the DNS server does not know the name.
    let dns = Dns::start("unrelated.example");
    let bed = TestBed::new();
    let subscriber = bed.subscribe("sampletopic");
    let root = EmptyRoot::new();
    root.add(POD_TOKEN, bed.token.as_bytes(), 0o644);
    root.add("/etc/hosts", b"127.0.0.1\tbroker.hosts.test\n", 0o644);
    root.add(
        "/etc/resolv.conf",
        format!("nameserver {}\n", dns.address).as_bytes(),
        0o644,
    );

    let port = bed.broker.port().to_string();
    let count = ROOT_COUNT.to_string();
    let (status, log) = root.run(&[
        "--host",
        "broker.hosts.test",
        "--port",
        &port,
        "--client-id",
        "static-hosts",
        "--count",
        &count,
        "--interval-ms",
        "0",
    ]);
    assert!(status.success(), "{status}\n{log}");
    Sequence::parse("samplepayload", &subscriber.sync(SYNC_TIMEOUT))
        .assert_contiguous(0, ROOT_COUNT);
}
