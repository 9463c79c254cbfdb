use std::collections::BTreeMap;
use std::sync::Arc;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use pigeon_shared::{InstanceId, PeerAddr, PublicKey, TalkTime, UserName};

use super::*;
use crate::events::RosterView;
use crate::session::Peer;

fn name(text: &str) -> UserName {
    UserName::parse(text).unwrap()
}

/// What the client says of a message it accepted.
fn sent(id: u64, confirmed: bool) -> crate::client_core::Sent {
    crate::client_core::Sent {
        id: MessageId(id),
        confirmed,
        time: TalkTime::parse("14:03:30").unwrap(),
    }
}

fn at() -> Stamp {
    Stamp::hm(14, 3)
}

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

fn ctrl(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)
}

fn alt(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::ALT)
}

fn type_line(ui: &mut UiState, text: &str) -> Vec<Effect> {
    for c in text.chars() {
        ui.on_key(key(KeyCode::Char(c)));
    }
    ui.on_key(key(KeyCode::Enter))
}

fn peer(port: u16, pigeon: bool) -> Peer {
    Peer {
        endpoint: PeerAddr::parse(&format!("127.0.0.1:{port}")).unwrap(),
        instance: pigeon.then_some(InstanceId(u64::from(port))),
        key: None,
    }
}

/// Alice's UI, logged in with bob, carol (seed-era) and 剑痴 online.
fn ready(history: bool, bell: bool) -> UiState {
    let mut ui = UiState::new(name("alice"), history, bell);
    let effects = ui.on_event(&ready_event(), &at());
    // The status tab shows this user's fingerprint once it is looked up.
    assert_eq!(
        effects,
        vec![Effect::WhoIs {
            name: name("alice")
        }]
    );
    ui
}

/// Alice is logged in with bob, carol (seed-era) and 剑痴 online.
fn ready_event() -> ClientEvent {
    let roster: BTreeMap<UserName, Peer> = [
        ("alice", peer(5000, true)),
        ("bob", peer(5001, true)),
        ("carol", peer(5002, false)),
        ("剑痴", peer(5003, true)),
    ]
    .into_iter()
    .map(|(n, p)| (name(n), p))
    .collect();
    ClientEvent::Ready {
        name: name("alice"),
        endpoint: PeerAddr::parse("127.0.0.1:5000").unwrap(),
        online: 4,
        roster: RosterView(Arc::new(roster)),
    }
}

fn message(from: &str, text: &str) -> ClientEvent {
    ClientEvent::Message {
        from: name(from),
        time: TalkTime::parse("14:03:27").unwrap(),
        text: text.into(),
    }
}

fn roster_names(ui: &UiState) -> Vec<String> {
    ui.roster().map(|u| u.name.to_string()).collect()
}

fn tab_titles(ui: &UiState) -> Vec<String> {
    ui.tabs().iter().map(|t| t.title().to_owned()).collect()
}

fn texts(tab: &Tab) -> Vec<String> {
    tab.lines.iter().map(|l| l.text.clone()).collect()
}

#[test]
fn ready_fills_the_roster_with_everyone_else() {
    let ui = ready(true, false);
    assert_eq!(roster_names(&ui), ["bob", "carol", "剑痴"]);
    assert_eq!(ui.connection(), &Connection::Online);
    assert_eq!(ui.endpoint(), Some("127.0.0.1:5000"));
    assert!(ui
        .roster()
        .any(|u| u.name.as_str() == "carol" && u.seed_era));
    let status = &ui.tabs()[0];
    assert!(
        texts(status)[0].contains("3 others online"),
        "{:?}",
        texts(status)
    );
}

#[test]
fn comings_and_goings_update_the_roster_and_keep_the_cursor_on_it() {
    let mut ui = ready(true, false);
    ui.on_key(key(KeyCode::Esc));
    ui.on_key(key(KeyCode::End));
    assert_eq!(ui.roster_cursor(), 2);
    ui.on_event(
        &ClientEvent::Offline {
            name: name("剑痴")
        },
        &at(),
    );
    assert_eq!(roster_names(&ui), ["bob", "carol"]);
    assert_eq!(ui.roster_cursor(), 1);
    ui.on_event(
        &ClientEvent::Online {
            name: name("dave"),
            endpoint: PeerAddr::parse("127.0.0.1:5004").unwrap(),
        },
        &at(),
    );
    assert_eq!(roster_names(&ui), ["bob", "carol", "dave"]);
    let status = texts(&ui.tabs()[0]);
    assert!(status.iter().any(|l| l == "剑痴 left"), "{status:?}");
    assert!(
        status.iter().any(|l| l.starts_with("dave is online")),
        "{status:?}"
    );
}

#[test]
fn a_message_out_of_view_opens_its_conversation_counts_unread_and_tells() {
    let mut ui = ready(true, true);
    let effects = ui.on_event(&message("bob", "lunch?"), &at());
    assert_eq!(
        effects,
        vec![
            Effect::LoadHistory {
                peer: name("bob"),
                count: OPENING_HISTORY,
                asked: false
            },
            Effect::Bell,
            // Kept in the history with the time the sender's message carries.
            Effect::Record(crate::history_actor::Record {
                peer: name("bob"),
                direction: Direction::Incoming,
                talk_time: "14:03:27".into(),
                text: "lunch?".into(),
                delivery: StoredDelivery::Received,
                id: None,
            }),
        ]
    );
    assert_eq!(tab_titles(&ui), ["status", "bob"]);
    assert_eq!(ui.active(), 0, "the view does not jump");
    assert_eq!(ui.unread("bob"), 1);
    ui.on_event(&message("bob", "hello?"), &at());
    assert_eq!(ui.unread("bob"), 2);
    let notice = ui.notice().unwrap();
    assert!(notice.starts_with("bob: hello?"), "{notice}");
    assert!(notice.contains("2 unread"), "{notice}");
    // Going there reads them.
    ui.on_key(alt(KeyCode::Char('1')));
    assert_eq!(ui.active(), 1);
    assert_eq!(ui.unread("bob"), 0);
    // In view, a message is not unread and the bell stays quiet.
    let effects = ui.on_event(&message("bob", "there you are"), &at());
    assert!(
        effects.iter().all(|e| matches!(e, Effect::Record(_))),
        "no bell, only the history: {effects:?}"
    );
    assert_eq!(ui.unread("bob"), 0);
    assert_eq!(texts(&ui.tabs()[1]), ["lunch?", "hello?", "there you are"]);
}

#[test]
fn the_bell_rings_only_when_on_and_the_setting_is_saved() {
    let mut ui = ready(false, false);
    assert!(!ui
        .on_event(&message("bob", "hi"), &at())
        .contains(&Effect::Bell));
    assert_eq!(type_line(&mut ui, "/bell on"), vec![Effect::SaveBell(true)]);
    assert!(ui.bell());
    assert!(ui
        .on_event(&message("carol", "hi"), &at())
        .contains(&Effect::Bell));
}

#[test]
fn typing_in_a_conversation_sends_to_its_peer() {
    let mut ui = ready(true, false);
    assert_eq!(
        type_line(&mut ui, "/open bob"),
        vec![Effect::LoadHistory {
            peer: name("bob"),
            count: OPENING_HISTORY,
            asked: false
        }]
    );
    assert_eq!(ui.active(), 1);
    assert_eq!(
        type_line(&mut ui, "你好, bob"),
        vec![Effect::Send {
            to: name("bob"),
            text: "你好, bob".into()
        }]
    );
    assert!(ui.input().is_empty());
    assert_eq!(
        type_line(&mut ui, "//shrug"),
        vec![Effect::Send {
            to: name("bob"),
            text: "/shrug".into()
        }]
    );
}

#[test]
fn typing_on_the_status_tab_keeps_the_text_and_explains() {
    let mut ui = ready(true, false);
    assert!(type_line(&mut ui, "hello?").is_empty());
    assert!(ui.notice().unwrap().contains("/open NAME"));
    assert_eq!(ui.input().text(), "hello?");
}

#[test]
fn enter_on_the_roster_opens_the_picked_conversation() {
    let mut ui = ready(false, false);
    ui.on_key(key(KeyCode::Esc));
    assert_eq!(ui.focus(), Focus::Roster);
    ui.on_key(key(KeyCode::Down));
    ui.on_key(key(KeyCode::Down));
    ui.on_key(key(KeyCode::Down));
    assert_eq!(ui.roster_cursor(), 2);
    ui.on_key(key(KeyCode::Up));
    let effects = ui.on_key(key(KeyCode::Enter));
    assert!(effects.is_empty(), "no history file: nothing to load");
    assert_eq!(ui.focus(), Focus::Input);
    assert_eq!(ui.active_tab().unwrap().title(), "carol");
    // Typing on the roster goes to the input line.
    ui.on_key(key(KeyCode::Esc));
    ui.on_key(key(KeyCode::Char('x')));
    assert_eq!(ui.focus(), Focus::Input);
    assert_eq!(ui.input().text(), "x");
}

#[test]
fn msg_opens_and_sends() {
    let mut ui = ready(false, false);
    let effects = type_line(&mut ui, "/msg 剑痴 早上好");
    assert_eq!(
        effects,
        vec![Effect::Send {
            to: name("剑痴"),
            text: "早上好".into()
        }]
    );
    assert_eq!(ui.active_tab().unwrap().title(), "剑痴");
}

#[test]
fn sent_lines_show_their_delivery_state() {
    let mut ui = ready(false, false);
    ui.message_sent(&name("bob"), &sent(1, true), "one", &at());
    ui.message_sent(&name("bob"), &sent(2, true), "two", &at());
    ui.message_sent(&name("carol"), &sent(3, false), "old school", &at());
    ui.on_event(
        &ClientEvent::Delivered {
            to: name("bob"),
            id: MessageId(2),
        },
        &at(),
    );
    ui.on_event(
        &ClientEvent::Failed {
            to: name("bob"),
            id: MessageId(1),
            text: "one".into(),
        },
        &at(),
    );
    let bob = &ui.tabs()[1];
    let marks: Vec<Mark> = bob.lines.iter().map(|l| l.mark).collect();
    assert_eq!(marks, [Mark::Failed, Mark::Delivered]);
    assert!(bob.lines.iter().all(|l| l.who == Who::Me));
    assert_eq!(ui.tabs()[2].lines[0].mark, Mark::Sent);
    assert!(ui.notice().unwrap().contains("not delivered to bob: one"));
}

#[test]
fn a_refused_message_comes_back_to_the_input_line() {
    let mut ui = ready(false, false);
    ui.message_refused(&name("bob"), "too long", "the message is too long");
    assert_eq!(ui.input().text(), "too long");
    assert!(ui.notice().unwrap().starts_with("not sent to bob"));
}

fn stored(peer: &str, direction: Direction, text: &str) -> StoredMessage {
    StoredMessage {
        peer: peer.into(),
        direction,
        at_ms: 1_700_000_000_000,
        talk_time: "9:00:00".into(),
        text: text.into(),
        delivery: match direction {
            Direction::Incoming => StoredDelivery::Received,
            Direction::Outgoing => StoredDelivery::Delivered,
        },
    }
}

#[test]
fn history_goes_before_this_runs_lines_once() {
    let mut ui = ready(true, false);
    ui.on_event(&message("bob", "new"), &at());
    let earlier = vec![
        stored("bob", Direction::Incoming, "old question"),
        stored("bob", Direction::Outgoing, "old answer"),
    ];
    ui.history_loaded(&name("bob"), false, Ok(earlier.clone()));
    // A second load on opening (a race) adds nothing.
    ui.history_loaded(&name("bob"), false, Ok(earlier));
    let bob = &ui.tabs()[1];
    assert_eq!(texts(bob), ["old question", "old answer", "new"]);
    assert!(bob.lines[0].earlier && bob.lines[1].earlier && !bob.lines[2].earlier);
    assert_eq!(bob.lines[1].who, Who::Me);
    assert_eq!(bob.lines[1].mark, Mark::Delivered);
    // /history asks for more and replaces the earlier part.
    let effects = type_line(&mut ui, "/history bob 3");
    assert_eq!(
        effects,
        vec![Effect::LoadHistory {
            peer: name("bob"),
            count: 3,
            asked: true
        }]
    );
    ui.history_loaded(
        &name("bob"),
        true,
        Ok(vec![
            stored("bob", Direction::Incoming, "older"),
            stored("bob", Direction::Incoming, "old question"),
            stored("bob", Direction::Outgoing, "old answer"),
        ]),
    );
    assert_eq!(
        texts(&ui.tabs()[1]),
        ["older", "old question", "old answer", "new"]
    );
    assert_eq!(ui.notice(), Some("3 earlier messages with bob"));
    // A history that cannot be read is a notice, nothing more.
    ui.history_loaded(&name("bob"), true, Err("database is locked".into()));
    assert!(ui.notice().unwrap().contains("database is locked"));
    assert_eq!(texts(&ui.tabs()[1]).len(), 4);
}

#[test]
fn search_results_go_to_the_status_tab() {
    let mut ui = ready(true, false);
    type_line(&mut ui, "/open bob");
    assert_eq!(
        type_line(&mut ui, "/search 吃饭"),
        vec![Effect::Search {
            text: "吃饭".into()
        }]
    );
    ui.search_done(
        "吃饭",
        Ok(vec![stored("剑痴", Direction::Incoming, "一起吃饭吗")]),
        &at(),
    );
    assert_eq!(ui.active(), 0);
    let status = texts(&ui.tabs()[0]);
    let last = status.last().unwrap();
    assert!(last.contains("剑痴 → alice: 一起吃饭吗"), "{last}");
    ui.search_done("zzz", Ok(Vec::new()), &at());
    assert!(texts(&ui.tabs()[0])
        .last()
        .unwrap()
        .contains("no messages contain"));
}

#[test]
fn without_history_the_history_commands_say_so() {
    let mut ui = ready(false, false);
    assert!(type_line(&mut ui, "/search x").is_empty());
    assert!(ui.notice().unwrap().contains("--no-history"));
    assert!(type_line(&mut ui, "/history bob").is_empty());
    assert!(ui.notice().unwrap().contains("--no-history"));
}

#[test]
fn tab_completes_names_from_the_roster() {
    let mut ui = ready(false, false);
    for c in "/open 剑".chars() {
        ui.on_key(key(KeyCode::Char(c)));
    }
    ui.on_key(key(KeyCode::Tab));
    assert_eq!(ui.input().text(), "/open 剑痴 ");
}

#[test]
fn tabs_cycle_and_close() {
    let mut ui = ready(false, false);
    type_line(&mut ui, "/open bob");
    type_line(&mut ui, "/open carol");
    assert_eq!(tab_titles(&ui), ["status", "bob", "carol"]);
    ui.on_key(ctrl('n'));
    assert_eq!(ui.active(), 0);
    ui.on_key(ctrl('p'));
    assert_eq!(ui.active(), 2);
    ui.on_key(alt(KeyCode::Left));
    assert_eq!(ui.active(), 1);
    type_line(&mut ui, "/close");
    assert_eq!(tab_titles(&ui), ["status", "carol"]);
    assert_eq!(ui.active(), 1);
    ui.on_key(alt(KeyCode::Char('0')));
    type_line(&mut ui, "/close");
    assert_eq!(tab_titles(&ui).len(), 2, "the status tab stays");
}

#[test]
fn conversation_tabs_are_bounded() {
    let mut ui = ready(false, false);
    for i in 0..MAX_CHAT_TABS + 10 {
        ui.on_event(&message(&format!("u{i}"), "hi"), &at());
    }
    assert_eq!(ui.tabs().len(), MAX_CHAT_TABS + 1);
    assert_eq!(
        ui.tabs().last().unwrap().title(),
        format!("u{}", MAX_CHAT_TABS + 9)
    );
}

#[test]
fn lines_are_bounded() {
    let mut ui = ready(false, false);
    type_line(&mut ui, "/open bob");
    for i in 0..MAX_TAB_LINES + 5 {
        ui.on_event(&message("bob", &i.to_string()), &at());
    }
    assert_eq!(ui.tabs()[1].lines.len(), MAX_TAB_LINES);
    assert_eq!(ui.tabs()[1].lines[0].text, "5");
}

#[test]
fn page_keys_scroll_within_what_the_view_reported() {
    let mut ui = ready(false, false);
    type_line(&mut ui, "/open bob");
    ui.viewed(10, 25);
    ui.on_key(key(KeyCode::PageUp));
    assert_eq!(ui.active_tab().unwrap().scroll, 10);
    ui.on_key(key(KeyCode::PageUp));
    ui.on_key(key(KeyCode::PageUp));
    assert_eq!(ui.active_tab().unwrap().scroll, 25);
    ui.on_key(key(KeyCode::PageDown));
    assert_eq!(ui.active_tab().unwrap().scroll, 15);
    // Sending jumps back to the newest.
    ui.message_sent(&name("bob"), &sent(1, true), "x", &at());
    assert_eq!(ui.active_tab().unwrap().scroll, 0);
}

#[test]
fn ctrl_c_quit_and_help() {
    let mut ui = ready(false, false);
    assert_eq!(ui.on_key(ctrl('c')), vec![Effect::Quit]);
    assert_eq!(ui.on_key(ctrl('d')), vec![Effect::Quit]);
    assert_eq!(type_line(&mut ui, "/quit"), vec![Effect::Quit]);
    type_line(&mut ui, "/help");
    let status = texts(&ui.tabs()[0]);
    assert!(status.iter().any(|l| l.starts_with("/search TEXT")));
    assert!(status.iter().any(|l| l.starts_with("Ctrl-C")));
    assert!(type_line(&mut ui, "/frob").is_empty());
    assert!(ui.notice().unwrap().contains("unknown command /frob"));
}

#[test]
fn connection_state_follows_the_session() {
    let mut ui = ready(false, false);
    ui.on_event(
        &ClientEvent::ServerLost {
            reason: "the server stopped answering".into(),
        },
        &at(),
    );
    assert_eq!(ui.connection(), &Connection::Reconnecting);
    ui.on_event(&ClientEvent::Reconnected { online: 3 }, &at());
    assert_eq!(ui.connection(), &Connection::Online);
}

#[test]
fn the_unread_notice_goes_when_its_conversation_comes_into_view() {
    // By /open.
    let mut ui = ready(false, false);
    ui.on_event(&message("bob", "are you there?"), &at());
    assert!(ui.notice().unwrap().contains("1 unread"));
    type_line(&mut ui, "/open bob");
    assert_eq!(ui.notice(), None);

    // By Alt-N.
    let mut ui = ready(false, false);
    ui.on_event(&message("bob", "are you there?"), &at());
    ui.on_key(alt(KeyCode::Char('1')));
    assert_eq!(ui.notice(), None);

    // By Esc and Enter on the roster.
    let mut ui = ready(false, false);
    ui.on_event(&message("bob", "are you there?"), &at());
    ui.on_key(key(KeyCode::Esc));
    ui.on_key(key(KeyCode::Enter));
    assert_eq!(ui.active_tab().map(Tab::title), Some("bob"));
    assert_eq!(ui.notice(), None);

    // Another conversation coming into view leaves it.
    let mut ui = ready(false, false);
    ui.on_event(&message("bob", "are you there?"), &at());
    ui.on_event(&message("剑痴", "早"), &at());
    ui.on_key(alt(KeyCode::Char('1')));
    assert!(ui.notice().unwrap().starts_with("剑痴: 早"));
    ui.on_key(alt(KeyCode::Char('2')));
    assert_eq!(ui.notice(), None);
}

#[test]
fn a_notice_for_a_tab_past_nine_names_no_alt_key() {
    let mut ui = ready(false, false);
    for i in 1..=10 {
        type_line(&mut ui, &format!("/open u{i}"));
    }
    ui.on_key(alt(KeyCode::Char('0')));
    ui.on_event(&message("bob", "hi"), &at());
    let notice = ui.notice().unwrap();
    assert!(notice.ends_with("(1 unread; /open bob)"), "{notice}");
}

#[test]
fn list_counts_the_others_in_words() {
    let mut ui = ready(true, false);
    type_line(&mut ui, "/list");
    assert_eq!(
        texts(&ui.tabs()[0]).last().map(String::as_str),
        Some("3 others online: bob, carol, 剑痴")
    );
    for gone in ["carol", "剑痴"] {
        ui.on_event(&ClientEvent::Offline { name: name(gone) }, &at());
    }
    type_line(&mut ui, "/list");
    assert_eq!(
        texts(&ui.tabs()[0]).last().map(String::as_str),
        Some("1 other online: bob")
    );
    ui.on_event(&ClientEvent::Offline { name: name("bob") }, &at());
    type_line(&mut ui, "/list");
    assert_eq!(
        texts(&ui.tabs()[0]).last().map(String::as_str),
        Some("nobody else is online")
    );
}

#[test]
fn connecting_says_where_and_how_often() {
    let mut ui = UiState::new(name("alice"), false, false);
    ui.set_server("127.0.0.1:7788", &at());
    assert_eq!(
        texts(&ui.tabs()[0]),
        ["connecting to 127.0.0.1:7788 as alice…"]
    );
    for attempt in 2..=3 {
        ui.on_event(
            &ClientEvent::Connecting {
                server: "127.0.0.1:7788".parse().unwrap(),
                attempt,
                why: crate::session::NO_ANSWER.into(),
            },
            &at(),
        );
    }
    assert_eq!(
        ui.notice(),
        Some(
            "connecting to 127.0.0.1:7788 (attempt 3) — is a server running? Start one with --host"
        )
    );
    // The hint stays in view on a narrow screen; the status tab says it once.
    assert_eq!(
        ui.notice_parts().map(|(_, hint)| hint),
        Some(" — is a server running? Start one with --host")
    );
    assert_eq!(ui.tabs()[0].lines.len(), 2);
    assert_eq!(ui.connection(), &Connection::Connecting);
    // Logged in: the notice goes.
    ui.on_event(&ready_event(), &at());
    assert_eq!(ui.notice(), None);
    assert_eq!(ui.connection(), &Connection::Online);
}

#[test]
fn sent_messages_are_kept_with_the_time_they_carry() {
    let mut ui = ready(true, false);
    let effects = ui.message_sent(&name("bob"), &sent(7, true), "hello", &at());
    assert_eq!(
        effects,
        vec![Effect::Record(crate::history_actor::Record {
            peer: name("bob"),
            direction: Direction::Outgoing,
            talk_time: "14:03:30".into(),
            text: "hello".into(),
            delivery: StoredDelivery::Sending,
            id: Some(MessageId(7)),
        })]
    );
    let effects = ui.on_event(
        &ClientEvent::Delivered {
            to: name("bob"),
            id: MessageId(7),
        },
        &at(),
    );
    assert_eq!(
        effects,
        vec![Effect::SetDelivery {
            id: MessageId(7),
            delivery: StoredDelivery::Delivered
        }]
    );
    // A seed-era peer never confirms: kept as sent, with no number to
    // update later. Without a history file nothing is kept.
    let effects = ui.message_sent(&name("carol"), &sent(8, false), "hi", &at());
    assert!(matches!(
        effects.as_slice(),
        [Effect::Record(crate::history_actor::Record {
            delivery: StoredDelivery::Sent,
            id: None,
            ..
        })]
    ));
    let mut off = ready(false, false);
    assert!(off
        .message_sent(&name("bob"), &sent(9, true), "x", &at())
        .is_empty());
}

#[test]
fn a_key_change_warns_on_its_conversation_and_whois_and_trust_answer() {
    let mut ui = ready(false, false);
    ui.on_key(key(KeyCode::Esc));
    let effects = ui.on_event(
        &ClientEvent::Message {
            from: name("bob"),
            time: TalkTime::parse("9:00:00").unwrap(),
            text: "hi".into(),
        },
        &at(),
    );
    drop(effects);
    let effects = ui.on_event(
        &ClientEvent::KeyChanged {
            name: name("bob"),
            old: PublicKey([1; 32]),
            new: PublicKey([2; 32]),
        },
        &at(),
    );
    assert!(effects.contains(&Effect::Bell));
    let bob = ui.tabs().iter().position(|t| t.title() == "bob").unwrap();
    let warned = |ui: &UiState, tab: usize| {
        texts(&ui.tabs()[tab])
            .iter()
            .any(|line| line.contains("WARNING: bob's key changed") && line.contains("/trust bob"))
    };
    assert!(warned(&ui, bob), "{:?}", texts(&ui.tabs()[bob]));
    assert!(warned(&ui, 0));
    assert!(ui.notice().unwrap().contains("/trust bob"));

    assert_eq!(
        type_line(&mut ui, "/whois bob"),
        vec![Effect::WhoIs { name: name("bob") }]
    );
    let info = KeyInfo {
        online: true,
        current: Some(PublicKey([2; 32])),
        pinned: Some(PublicKey([1; 32])),
    };
    ui.whois_done(&name("bob"), &info, &at());
    let fingerprint = PublicKey([2; 32]).fingerprint().to_string();
    assert!(texts(&ui.tabs()[bob])
        .iter()
        .any(|line| line.contains(&fingerprint) && line.contains("changed")));
    assert_eq!(
        type_line(&mut ui, "/trust bob"),
        vec![Effect::Trust { name: name("bob") }]
    );
    ui.trust_done(&name("bob"), Ok(()), &at());
    assert!(ui.notice().unwrap().contains("trusted"));
    // Own fingerprint, and a seed-era peer said to be unprotected.
    ui.whois_done(
        &name("alice"),
        &KeyInfo {
            online: true,
            current: Some(PublicKey([3; 32])),
            pinned: Some(PublicKey([3; 32])),
        },
        &at(),
    );
    ui.whois_done(
        &name("carol"),
        &KeyInfo {
            online: true,
            current: None,
            pinned: None,
        },
        &at(),
    );
    let status = texts(&ui.tabs()[0]);
    assert!(status.iter().any(|l| l.contains("your key's fingerprint")
        && l.contains(&PublicKey([3; 32]).fingerprint().to_string())));
    assert!(status
        .iter()
        .any(|l| l.contains("carol") && l.contains("not encrypted and not verified")));
}
