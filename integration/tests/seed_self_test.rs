//! The seed-faithful peers against each other, on loopback: if they did not
//! work together the way the seed's C# programs do, the interop tests built on
//! them would prove nothing.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use integration::seed::client::SeedClient;
use integration::seed::server::SeedServer;
use integration::seed::{decode_unicode, encode_unicode};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const WAIT: Duration = Duration::from_secs(3);

fn any_local() -> SocketAddr {
    SocketAddr::new(LOOPBACK, 0)
}

fn server() -> SeedServer {
    SeedServer::start(LOOPBACK).expect("start the seed server")
}

/// Logs `name` in and waits until its roster has arrived (it always lists the
/// new user, as the seed's roster does).
fn logged_in(name: &str, server: &SeedServer) -> SeedClient {
    let client = SeedClient::login(name, any_local(), server.udp_addr()).expect("log in");
    assert!(
        client.wait_for_user(name, WAIT),
        "{name} never got its roster; log: {:?}",
        client.log()
    );
    client
}

fn send_raw(text: &str, to: SocketAddr) {
    let socket = UdpSocket::bind(any_local()).unwrap();
    socket.send_to(&encode_unicode(text), to).unwrap();
}

fn is_long_time(time: &str) -> bool {
    let parts: Vec<&str> = time.split(':').collect();
    parts.len() == 3
        && (1..=2).contains(&parts[0].len())
        && !(parts[0].len() == 2 && parts[0].starts_with('0'))
        && parts[1].len() == 2
        && parts[2].len() == 2
        && parts.iter().all(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

#[test]
fn rosters_and_login_broadcasts() {
    let server = server();
    let alice = logged_in("alice", &server);
    assert_eq!(
        alice.users(),
        vec![format!("alice,{}", alice.endpoint())],
        "the first roster lists only the new user herself"
    );

    let bob = logged_in("bob", &server);
    assert!(bob.wait_for_user("alice", WAIT));
    assert_eq!(
        bob.users(),
        vec![
            format!("alice,{}", alice.endpoint()),
            format!("bob,{}", bob.endpoint()),
        ]
    );
    // Alice learns of Bob from the forwarded login datagram, unchanged.
    assert!(alice.wait_for_user("bob", WAIT));
    assert_eq!(
        alice.users(),
        vec![
            format!("alice,{}", alice.endpoint()),
            format!("bob,{}", bob.endpoint()),
        ]
    );

    let carol = logged_in("carol", &server);
    assert!(carol.wait_for_user("alice", WAIT) && carol.wait_for_user("bob", WAIT));
    assert!(alice.wait_for_user("carol", WAIT));
    assert!(bob.wait_for_user("carol", WAIT));

    let names: Vec<String> = server.users().into_iter().map(|(name, _)| name).collect();
    assert_eq!(names, ["alice", "bob", "carol"]);
    assert_eq!(
        server.users()[1],
        ("bob".to_string(), bob.endpoint().to_string())
    );
    let log = server.log();
    assert!(log
        .iter()
        .any(|l| l.contains("user bob(") && l.contains("joined")));
    assert!(log
        .iter()
        .any(|l| l.contains(&format!("[Accept,{}]", server.tcp_port()))));
    assert!(log
        .iter()
        .any(|l| l.starts_with("sent to ") && l.ends_with(";end]")));
    assert!(server.is_receiving());
    assert!(alice.is_receiving() && bob.is_receiving() && carol.is_receiving());
}

#[test]
fn talk_both_ways_truncates_at_comma() {
    let server = server();
    let alice = logged_in("alice", &server);
    let bob = logged_in("bob", &server);
    assert!(alice.wait_for_user("bob", WAIT));

    alice.open_chat("bob");
    bob.talk("alice", "你好").unwrap();
    let (from, time, text) = alice.wait_for_message("bob", WAIT).expect("bob -> alice");
    assert_eq!((from.as_str(), text.as_str()), ("bob", "你好"));
    assert!(is_long_time(&time), "not H:mm:ss: {time:?}");

    // Bob's window for Alice is open since he wrote to her.
    alice.talk("bob", "hi, there, friend").unwrap();
    let (from, _, text) = bob.wait_for_message("alice", WAIT).expect("alice -> bob");
    assert_eq!(from, "alice");
    assert_eq!(text, "hi", "the seed keeps only field 3 of a talk");

    bob.talk("alice", "second").unwrap();
    let (_, _, text) = alice.wait_for_message("bob", WAIT).expect("second message");
    assert_eq!(text, "second");
    assert_eq!(alice.received().len(), 2);
}

#[test]
fn talk_is_dropped_while_no_chat_window_is_open() {
    let server = server();
    let alice = logged_in("alice", &server);
    let bob = logged_in("bob", &server);
    assert!(alice.wait_for_user("bob", WAIT));

    bob.talk("alice", "unseen").unwrap();
    assert!(
        alice.wait_until(WAIT, |view| view
            .log
            .iter()
            .any(|l| l.ends_with(",bob,unseen"))),
        "the talk datagram never arrived"
    );
    assert!(alice.received().is_empty());

    alice.open_chat("bob");
    bob.talk("alice", "seen").unwrap();
    let (_, _, text) = alice.wait_for_message("bob", WAIT).unwrap();
    assert_eq!(text, "seen");
    assert_eq!(alice.received().len(), 1);
}

#[test]
fn logout_removes_the_user_everywhere() {
    let server = server();
    let alice = logged_in("alice", &server);
    let bob = logged_in("bob", &server);
    assert!(alice.wait_for_user("bob", WAIT));

    bob.logout().unwrap();
    assert!(alice.wait_for_user_gone("bob", WAIT));
    assert!(server.wait_for_users(WAIT, |users| users.len() == 1));
    assert_eq!(server.users()[0].0, "alice");
    assert!(server.log().iter().any(|l| l.contains("user bob(")));
    assert!(alice.is_receiving());
    assert!(alice.talk("bob", "gone?").is_err());

    // A roster fetched now lists only Alice.
    let carol = logged_in("carol", &server);
    assert!(carol.wait_for_user("alice", WAIT));
    assert_eq!(carol.user_names(), ["alice", "carol"]);
}

#[test]
fn a_datagram_without_an_endpoint_in_field_2_stops_the_seed_server() {
    let server = server();
    let alice = logged_in("alice", &server);

    // What a talk from a newer peer would look like: field 2 is a name.
    send_raw("talk,12:00:00,bob,hello", server.udp_addr());
    assert!(
        server.wait_for_loop_end(WAIT),
        "the receive loop should have ended"
    );
    // (Its list box may show a line from another thread after it.)
    assert!(server.log().iter().any(|line| line.contains("ended")));

    // From now on nobody can log in: no Accept, no roster.
    let bob = SeedClient::login("bob", any_local(), server.udp_addr()).unwrap();
    assert!(!bob.wait_for_user("bob", Duration::from_millis(200)));
    assert!(alice.is_receiving());
}

#[test]
fn short_or_bad_datagrams_also_stop_the_seed_server() {
    for datagram in [
        "hello",
        "login,x",
        "login,x,hello",
        "login,x,[::1]:5",
        "logout,x,1.2.3.4:99999",
    ] {
        let server = server();
        send_raw(datagram, server.udp_addr());
        assert!(
            server.wait_for_loop_end(WAIT),
            "{datagram:?} should end the receive loop"
        );
    }
    // An unknown verb with a valid endpoint is harmless: a later login works.
    let server = server();
    send_raw("ping,x,127.0.0.1:9", server.udp_addr());
    let alice = logged_in("alice", &server);
    assert!(server.is_receiving());
    assert_eq!(alice.user_names(), ["alice"]);
    assert!(server
        .log()
        .iter()
        .any(|l| l.ends_with(":ping,x,127.0.0.1:9")));
}

#[test]
fn the_seed_client_loop_ends_on_a_short_message_but_not_on_a_bad_accept() {
    let client = SeedClient::login("solo", any_local(), "127.0.0.1:9".parse().unwrap()).unwrap();

    // A bad Accept is caught by the seed's inner try (a message box).
    send_raw("Accept,notaport", client.endpoint());
    assert!(client.wait_until(WAIT, |view| view
        .log
        .iter()
        .any(|l| l.contains("message box"))));
    assert!(client.is_receiving());

    // A short talk is harmless while no window is open ...
    send_raw("talk,1:00:00", client.endpoint());
    assert!(client.wait_until(WAIT, |view| view
        .log
        .iter()
        .any(|l| l.ends_with("talk,1:00:00"))));
    assert!(client.is_receiving());

    // ... but a login without field 2 ends the loop.
    send_raw("login,ghost", client.endpoint());
    assert!(client.wait_for_loop_end(WAIT));
    assert!(client.users().is_empty());
}

#[test]
fn duplicate_names_are_kept_and_logout_skips_the_next_one() {
    let server = server();
    let sink = UdpSocket::bind(any_local()).unwrap();
    let endpoint = sink.local_addr().unwrap();
    send_raw(&format!("login,dup,{endpoint}"), server.udp_addr());
    send_raw(&format!("login,dup,{endpoint}"), server.udp_addr());
    assert!(server.wait_for_users(WAIT, |users| users.len() == 2));

    // The roster as the seed writes it, read off the wire by hand.
    let mut stream = TcpStream::connect((LOOPBACK, server.tcp_port())).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).unwrap();
    let roster = format!("dup,{endpoint};dup,{endpoint};end");
    assert_eq!(bytes[0] as usize, roster.len());
    assert_eq!(&bytes[1..], roster.as_bytes());

    // The seed's RemoveAt loop skips the element after a removed one.
    send_raw(&format!("logout,dup,{endpoint}"), server.udp_addr());
    assert!(server.wait_for_users(WAIT, |users| users.len() == 1));
    assert!(server.is_receiving());

    // The sink got two Accepts and no login broadcast: the broadcast skips
    // every user with the new user's name.
    sink.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 512];
    for _ in 0..2 {
        let (len, _) = sink.recv_from(&mut buf).unwrap();
        assert_eq!(
            decode_unicode(&buf[..len]),
            format!("Accept,{}", server.tcp_port())
        );
    }
    // The logout is forwarded to the remaining "dup".
    let (len, _) = sink.recv_from(&mut buf).unwrap();
    assert_eq!(
        decode_unicode(&buf[..len]),
        format!("logout,dup,{endpoint}")
    );
}

#[test]
fn stopping_ends_the_threads() {
    let server = server();
    let client = logged_in("alice", &server);
    drop(client);
    server.stop();
}
