//! Property tests: decoding is total, and encoding then decoding gives back
//! what was encoded.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use pigeon_shared::roster_snapshot::{decode_frame, encode_roster};
use pigeon_shared::utf16::put_utf16le;
use pigeon_shared::{
    Accept, Datagram, Login, Logout, PeerAddr, RefuseReason, Refused, RosterSnapshot, Talk,
    TalkTime, TimeOfDay, UserName, MAX_DATAGRAM_LEN,
};
use proptest::prelude::*;

fn user_name() -> impl Strategy<Value = UserName> {
    // Mostly valid characters, including CJK and astral ones; filtered
    // through the real validator so the strategy never disagrees with it.
    proptest::collection::vec(
        prop_oneof![
            proptest::char::range('a', 'z'),
            proptest::char::range('0', '9'),
            proptest::char::range('\u{4E00}', '\u{9FFF}'),
            proptest::char::range('\u{1F300}', '\u{1F5FF}'),
            Just('_'),
            Just('-'),
        ],
        1..=32,
    )
    .prop_map(|chars| chars.into_iter().collect::<String>())
    .prop_filter_map("valid name", |text| UserName::parse(&text).ok())
}

fn peer_addr() -> impl Strategy<Value = PeerAddr> {
    let v4 = (any::<[u8; 4]>(), any::<u16>())
        .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port));
    let v6 = (any::<[u16; 8]>(), any::<u16>()).prop_map(|(segs, port)| {
        SocketAddr::new(
            IpAddr::V6(Ipv6Addr::new(
                segs[0], segs[1], segs[2], segs[3], segs[4], segs[5], segs[6], segs[7],
            )),
            port,
        )
    });
    prop_oneof![v4, v6].prop_map(PeerAddr::new)
}

fn talk_time() -> impl Strategy<Value = TalkTime> {
    (0u8..24, 0u8..60, 0u8..60).prop_map(|(hour, minute, second)| {
        TalkTime::from_time_of_day(TimeOfDay {
            hour,
            minute,
            second,
        })
    })
}

fn datagram() -> impl Strategy<Value = Datagram> {
    prop_oneof![
        (user_name(), peer_addr())
            .prop_map(|(name, endpoint)| Datagram::Login(Login { name, endpoint })),
        (user_name(), peer_addr())
            .prop_map(|(name, endpoint)| Datagram::Logout(Logout { name, endpoint })),
        (1u16..).prop_map(|tcp_port| Datagram::Accept(Accept { tcp_port })),
        (talk_time(), user_name(), ".{0,200}")
            .prop_map(|(time, from, text)| Datagram::Talk(Talk { time, from, text })),
        (
            prop_oneof![
                Just(RefuseReason::NameTaken),
                Just(RefuseReason::EndpointTaken),
                Just(RefuseReason::BadEndpoint),
                Just(RefuseReason::ServerFull),
                "[a-z][a-z0-9-]{0,31}".prop_map(|t| RefuseReason::parse(&t).unwrap()),
            ],
            ".{0,80}"
        )
            .prop_map(|(reason, detail)| Datagram::Refused(Refused { reason, detail })),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Datagram::decode(&bytes);
    }

    #[test]
    fn decoding_arbitrary_text_never_panics(text in "\\PC{0,64}") {
        let mut bytes = Vec::new();
        put_utf16le(&mut bytes, &text);
        let _ = Datagram::decode(&bytes);
    }

    #[test]
    fn decoding_near_miss_datagrams_never_panics(
        verb in prop_oneof![Just("login"), Just("logout"), Just("Accept"), Just("talk"), Just("refused")],
        fields in proptest::collection::vec("[^,]{0,12}", 0..5),
    ) {
        let text = std::iter::once(verb.to_owned()).chain(fields).collect::<Vec<_>>().join(",");
        let mut bytes = Vec::new();
        put_utf16le(&mut bytes, &text);
        let _ = Datagram::decode(&bytes);
    }

    #[test]
    fn encode_then_decode_round_trips(datagram in datagram()) {
        let bytes = datagram.to_bytes();
        prop_assert_eq!(bytes.len(), datagram.encoded_len());
        prop_assert!(bytes.len() <= MAX_DATAGRAM_LEN);
        prop_assert_eq!(Datagram::decode(&bytes), Ok(datagram));
    }

    #[test]
    fn roster_frames_round_trip(users in proptest::collection::vec((user_name(), peer_addr()), 0..40)) {
        let mut buf = Vec::new();
        encode_roster(users.iter().map(|(n, a)| (n, a)), &mut buf);
        let (text, used) = decode_frame(&buf, usize::MAX).unwrap().unwrap();
        prop_assert_eq!(used, buf.len());
        let snapshot = RosterSnapshot::parse(&text).unwrap();
        prop_assert!(snapshot.skipped.is_empty());
        let decoded: Vec<_> = snapshot.entries.into_iter().map(|e| (e.name, e.endpoint)).collect();
        prop_assert_eq!(decoded, users);
    }

    #[test]
    fn roster_decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(Some((text, _))) = decode_frame(&bytes, 4096) {
            let _ = RosterSnapshot::parse(&text);
        }
    }
}
