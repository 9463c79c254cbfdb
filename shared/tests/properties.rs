//! Property tests: decoding is total, and encoding then decoding gives back
//! what was encoded.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use pigeon_shared::roster_snapshot::{decode_frame, encode_pigeon_roster, encode_roster};
use pigeon_shared::seal::{open, seal, SealError, SessionKey};
use pigeon_shared::utf16::put_utf16le;
use pigeon_shared::{
    Accept, AcceptExt, Ack, Bye, Chat, Closing, Datagram, Delta, Expired, InstanceId, Login,
    LoginExt, Logout, LogoutExt, Meet, Nonce, PeerAddr, Ping, Pong, Punch, RefuseReason, Refused,
    RosterChange, RosterSnapshot, Sealed, SessionToken, Talk, TalkTime, TimeOfDay, UserName,
    MAX_DATAGRAM_LEN,
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

fn instance() -> impl Strategy<Value = InstanceId> {
    any::<u64>().prop_map(InstanceId)
}

fn token() -> impl Strategy<Value = SessionToken> {
    any::<u128>().prop_map(SessionToken)
}

fn nonce() -> impl Strategy<Value = Option<Nonce>> {
    proptest::option::of(any::<u128>().prop_map(Nonce))
}

fn roster_change() -> impl Strategy<Value = RosterChange> {
    prop_oneof![
        (
            user_name(),
            peer_addr(),
            proptest::option::of(instance()),
            proptest::option::of(any::<[u8; 32]>().prop_map(pigeon_shared::PublicKey))
        )
            .prop_map(|(name, endpoint, instance, key)| RosterChange::Joined {
                name,
                endpoint,
                instance,
                key,
            }),
        (user_name(), peer_addr())
            .prop_map(|(name, endpoint)| RosterChange::Left { name, endpoint }),
    ]
}

fn chat() -> impl Strategy<Value = Chat> {
    (
        instance(),
        1u64..1_000_000,
        1u16..=pigeon_shared::MAX_PARTS,
        talk_time(),
        user_name(),
        ".{0,100}",
    )
        .prop_flat_map(|(instance, seq, parts, time, from, text)| {
            (1..=seq, 1..=parts).prop_map(move |(base, part)| Chat {
                instance,
                seq,
                base,
                part,
                parts,
                time: time.clone(),
                from: from.clone(),
                text: text.clone(),
            })
        })
}

fn datagram() -> impl Strategy<Value = Datagram> {
    prop_oneof![
        (
            user_name(),
            peer_addr(),
            proptest::option::of((
                instance(),
                proptest::option::of(token()),
                nonce(),
                proptest::option::of(proptest::array::uniform::<
                    _,
                    { pigeon_shared::handshake::HELLO_BYTES },
                >(any::<u8>())),
                0..=pigeon_shared::MAX_PAD as u16
            ))
        )
            .prop_map(|(name, endpoint, ext)| Datagram::Login(Login {
                name,
                endpoint,
                pigeon: ext.map(|(instance, token, nonce, hello, pad)| LoginExt {
                    instance,
                    token,
                    nonce,
                    hello,
                    pad,
                }),
            })),
        (user_name(), peer_addr(), proptest::option::of(token())).prop_map(
            |(name, endpoint, token)| Datagram::Logout(Logout {
                name,
                endpoint,
                pigeon: token.map(|token| LogoutExt { token }),
            })
        ),
        (
            1u16..,
            proptest::option::of((
                1u16..,
                token(),
                1u32..,
                nonce(),
                proptest::option::of(proptest::array::uniform::<
                    _,
                    { pigeon_shared::handshake::REPLY_BYTES },
                >(any::<u8>())),
                proptest::option::of(peer_addr()),
                proptest::option::of(1u32..),
            ))
        )
            .prop_map(|(tcp_port, ext)| {
                Datagram::Accept(Accept {
                    tcp_port,
                    pigeon: ext.map(
                        |(roster_port, token, keepalive_ms, nonce, reply, public, relay)| {
                            AcceptExt {
                                roster_port,
                                // Without a handshake, the token goes in clear.
                                token: if reply.is_some() { None } else { Some(token) },
                                keepalive_ms,
                                nonce,
                                reply,
                                public,
                                relay,
                            }
                        },
                    ),
                })
            }),
        (talk_time(), user_name(), ".{0,200}")
            .prop_map(|(time, from, text)| Datagram::Talk(Talk { time, from, text })),
        (
            prop_oneof![
                Just(RefuseReason::NameTaken),
                Just(RefuseReason::EndpointTaken),
                Just(RefuseReason::BadEndpoint),
                Just(RefuseReason::ServerFull),
                Just(RefuseReason::HostFull),
                "[a-z][a-z0-9-]{0,31}".prop_map(|t| RefuseReason::parse(&t).unwrap()),
            ],
            // A detail never starts with the extension's tag.
            "([^p].{0,79})?",
            nonce()
        )
            .prop_map(|(reason, detail, nonce)| Datagram::Refused(Refused {
                reason,
                detail,
                nonce
            })),
        (user_name(), token(), nonce()).prop_map(|(name, token, nonce)| Datagram::Ping(Ping {
            name,
            token,
            nonce
        })),
        any::<u64>().prop_map(|revision| Datagram::Pong(Pong { revision })),
        (user_name(), nonce()).prop_map(|(name, nonce)| Datagram::Expired(Expired { name, nonce })),
        (any::<[u8; 16]>(), ".{1,80}")
            .prop_map(|(mac, inner)| Datagram::Sealed(Sealed { mac, inner })),
        user_name().prop_map(|name| Datagram::Bye(Bye { name })),
        ".{0,80}".prop_map(|detail| Datagram::Closing(Closing { detail })),
        (
            0u64..u64::MAX / 2,
            proptest::collection::vec(roster_change(), 1..20)
        )
            .prop_map(|(from, changes)| Datagram::Delta(Delta::new(from, &changes))),
        chat().prop_map(Datagram::Chat),
        (user_name(), token(), user_name()).prop_map(|(name, token, peer)| Datagram::Meet(Meet {
            name,
            token,
            peer
        })),
        (user_name(), peer_addr(), proptest::option::of(peer_addr())).prop_map(
            |(peer, endpoint, local)| Datagram::Punch(Punch {
                peer,
                endpoint,
                local
            })
        ),
        (user_name(), instance(), 1u64..=pigeon_shared::MAX_SEQ).prop_map(
            |(from, instance, seq)| Datagram::Ack(Ack {
                from,
                instance,
                seq
            })
        ),
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
        verb in proptest::sample::select(pigeon_shared::Verb::ALL.map(|v| v.as_str()).to_vec()),
        fields in proptest::collection::vec("[^,]{0,12}|pigeon1;[a-z]{1,4}=[0-9a-f]{0,33}|[+-][a-z]{1,3};[0-9.:]{0,16};[0-9a-f-]{0,17}", 0..8),
    ) {
        let text = std::iter::once(verb.to_owned()).chain(fields).collect::<Vec<_>>().join(",");
        let mut bytes = Vec::new();
        put_utf16le(&mut bytes, &text);
        let _ = Datagram::decode(&bytes);
    }

    #[test]
    fn delta_changes_read_back_as_they_were_written(
        from in 0u64..u64::MAX / 2,
        changes in proptest::collection::vec(roster_change(), 1..20),
    ) {
        let bytes = Datagram::Delta(Delta::new(from, &changes)).to_bytes();
        let Ok(Datagram::Delta(delta)) = Datagram::decode(&bytes) else {
            panic!("not a delta");
        };
        let read: Vec<_> = delta.changes().map(|(_, c)| c.unwrap()).collect();
        prop_assert_eq!(read, changes);
    }

    #[test]
    fn encode_then_decode_round_trips(datagram in datagram()) {
        let bytes = datagram.to_bytes();
        prop_assert_eq!(bytes.len(), datagram.encoded_len());
        prop_assert!(bytes.len() <= MAX_DATAGRAM_LEN);
        prop_assert_eq!(Datagram::decode(&bytes), Ok(datagram));
    }

    #[test]
    fn only_the_sessions_key_opens_a_sealed_datagram(
        datagram in datagram().prop_filter("sealed already", |d| !matches!(d, Datagram::Sealed(_))),
        token in token(),
        other in token(),
        flip in any::<prop::sample::Index>(),
    ) {
        let key = SessionKey::from_token(token);
        let sealed = seal(&key, &datagram);
        // Sealed, it travels like any datagram.
        let Ok(Datagram::Sealed(sealed)) = Datagram::decode(&sealed.to_bytes()) else {
            panic!("not a sealed datagram");
        };
        prop_assert_eq!(open(&key, &sealed), Ok(datagram));
        if other != token {
            prop_assert_eq!(open(&SessionKey::from_token(other), &sealed), Err(SealError::BadMac));
        }
        // Any change to one character of what is inside breaks the seal.
        let mut chars: Vec<char> = sealed.inner.chars().collect();
        let at = flip.index(chars.len());
        if let Some(c) = chars.get_mut(at) {
            *c = if *c == 'x' { 'y' } else { 'x' };
        }
        let forged = Sealed { mac: sealed.mac, inner: chars.into_iter().collect() };
        prop_assert_eq!(open(&key, &forged), Err(SealError::BadMac));
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
    fn pigeon_roster_frames_round_trip(
        revision in any::<u64>(),
        users in proptest::collection::vec((user_name(), peer_addr(), proptest::option::of(instance())), 0..40),
    ) {
        let mut buf = Vec::new();
        encode_pigeon_roster(revision, users.iter().map(|(n, a, i)| (n, a, *i, None)), &mut buf);
        let (text, _) = decode_frame(&buf, usize::MAX).unwrap().unwrap();
        let snapshot = RosterSnapshot::parse(&text).unwrap();
        prop_assert_eq!(snapshot.revision, Some(revision));
        let decoded: Vec<_> = snapshot.entries.into_iter().map(|e| (e.name, e.endpoint, e.instance)).collect();
        prop_assert_eq!(decoded, users);
    }

    #[test]
    fn roster_decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(Some((text, _))) = decode_frame(&bytes, 4096) {
            let _ = RosterSnapshot::parse(&text);
        }
    }
}
