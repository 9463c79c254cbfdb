use std::collections::BTreeMap;
use std::sync::Arc;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use pigeon_shared::{InstanceId, PeerAddr, TalkTime, UserName};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

use super::*;
use crate::events::{ClientEvent, MessageId, RosterView};
use crate::session::Peer;
use crate::ui::state::Stamp;

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

/// The screen as text, one string per row (a wide character's second
/// column is not repeated), with the cursor position if shown.
fn screen(ui: &mut UiState, width: u16, height: u16) -> Vec<String> {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    let mut view = None;
    terminal.draw(|frame| view = Some(draw(frame, ui))).unwrap();
    if let Some(view) = view {
        ui.viewed(view.rows, view.max_scroll);
    }
    let buffer = terminal.backend().buffer();
    (0..height)
        .map(|y| {
            let mut row = String::new();
            let mut skip = 0;
            for x in 0..width {
                if skip > 0 {
                    skip -= 1;
                    continue;
                }
                let symbol = buffer[(x, y)].symbol();
                skip = symbol.width().saturating_sub(1);
                row.push_str(symbol);
            }
            row.trim_end().to_owned()
        })
        .collect()
}

fn assert_screen(actual: &[String], expected: &str) {
    let expected: Vec<&str> = expected.lines().collect();
    let actual: Vec<&str> = actual.iter().map(String::as_str).collect();
    assert_eq!(
        actual,
        expected,
        "\nactual screen:\n{}\n",
        actual.join("\n")
    );
}

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

fn type_line(ui: &mut UiState, text: &str) {
    for c in text.chars() {
        ui.on_key(key(KeyCode::Char(c)));
    }
    ui.on_key(key(KeyCode::Enter));
}

fn logged_in(others: &[&str]) -> UiState {
    let mut ui = UiState::new(name("alice"), true, false);
    let roster: BTreeMap<UserName, Peer> = std::iter::once("alice")
        .chain(others.iter().copied())
        .enumerate()
        .map(|(i, n)| {
            (
                name(n),
                Peer {
                    endpoint: PeerAddr::parse(&format!("127.0.0.1:{}", 5000 + i)).unwrap(),
                    instance: Some(InstanceId(i as u64)),
                    key: None,
                },
            )
        })
        .collect();
    ui.on_event(
        &ClientEvent::Ready {
            name: name("alice"),
            endpoint: PeerAddr::parse("127.0.0.1:5000").unwrap(),
            online: roster.len(),
            roster: RosterView(Arc::new(roster)),
        },
        &Stamp::hm(9, 30),
    );
    ui
}

fn message(ui: &mut UiState, from: &str, text: &str, at: Stamp) {
    ui.on_event(
        &ClientEvent::Message {
            from: name(from),
            time: TalkTime::parse("9:31:00").unwrap(),
            text: text.into(),
        },
        &at,
    );
}

#[test]
fn an_empty_roster() {
    let mut ui = logged_in(&[]);
    assert_screen(
        &screen(&mut ui, 80, 12),
        "\
┌ Online (0) ──────┐┌ 0:status ────────────────────────────────────────────────┐
│                  ││09:30 logged in as alice at 127.0.0.1:5000; 0 others      │
│                  ││      online. /help lists the commands                    │
│                  ││                                                          │
│                  ││                                                          │
│                  ││                                                          │
│                  ││                                                          │
│                  ││                                                          │
└──────────────────┘└──────────────────────────────────────────────────────────┘

>
 alice @ 127.0.0.1:5000 · online · 0 others · bell off │ Esc roster · Ctrl-N/P t",
    );
}

#[test]
fn three_users_with_unread_counts() {
    let mut ui = logged_in(&["bob", "carol", "dave"]);
    message(&mut ui, "bob", "lunch at noon?", Stamp::hm(9, 31));
    message(&mut ui, "bob", "or later", Stamp::hm(9, 32));
    message(&mut ui, "dave", "hi!", Stamp::hm(9, 33));
    assert_screen(
        &screen(&mut ui, 80, 12),
        "\
┌ Online (3) ──────┐┌ 0:status 1:bob(2) 2:dave(1) ─────────────────────────────┐
│ bob             2││09:30 logged in as alice at 127.0.0.1:5000; 3 others      │
│ carol            ││      online. /help lists the commands                    │
│ dave            1││                                                          │
│                  ││                                                          │
│                  ││                                                          │
│                  ││                                                          │
│                  ││                                                          │
└──────────────────┘└──────────────────────────────────────────────────────────┘
dave: hi!   (1 unread; Alt-2 or /open dave)
>
 alice @ 127.0.0.1:5000 · online · 3 others · bell off │ Esc roster · Ctrl-N/P t",
    );
    // Opening bob's conversation reads his messages.
    type_line(&mut ui, "/open bob");
    let rows = screen(&mut ui, 80, 12);
    assert_eq!(
        rows[0],
        "┌ Online (3) ──────┐┌ 0:status 1:bob 2:dave(1) ────────────────────────────────┐"
    );
    assert_eq!(
        rows[1],
        "│ bob              ││09:31 bob: lunch at noon?                                 │"
    );
    assert_eq!(
        rows[2],
        "│ carol            ││09:32 bob: or later                                       │"
    );
}

#[test]
fn a_chinese_conversation_wraps_by_columns() {
    let mut ui = logged_in(&["剑痴"]);
    type_line(&mut ui, "/open 剑痴");
    message(
        &mut ui,
        "剑痴",
        "你好！今天中午一起吃饭吗？我们可以去学校门口那家新开的面馆试试。",
        Stamp::hm(11, 58),
    );
    ui.message_sent(
        &name("剑痴"),
        &sent(1, true),
        "好啊，十二点见",
        &Stamp::hm(11, 59),
    );
    ui.on_event(
        &ClientEvent::Delivered {
            to: name("剑痴"),
            id: MessageId(1),
        },
        &Stamp::hm(11, 59),
    );
    for c in "不见不散".chars() {
        ui.on_key(key(KeyCode::Char(c)));
    }
    assert_screen(
        &screen(&mut ui, 60, 10),
        "\
┌ Online (1) ────┐┌ 0:status 1:剑痴 ───────────────────────┐
│ 剑痴           ││11:58 剑痴: 你好！今天中午一起吃饭吗？我│
│                ││            们可以去学校门口那家新开的面│
│                ││            馆试试。                    │
│                ││11:59 alice: 好啊，十二点见 ✓           │
│                ││                                        │
└────────────────┘└────────────────────────────────────────┘

剑痴> 不见不散
 alice @ 127.0.0.1:5000 · online · 1 other · bell off │ Esc",
    );
}

#[test]
fn a_narrow_terminal_shows_one_pane_at_a_time() {
    let mut ui = logged_in(&["bob", "carol"]);
    type_line(&mut ui, "/open bob");
    message(
        &mut ui,
        "bob",
        "a narrow terminal still shows the whole message",
        Stamp::hm(9, 31),
    );
    message(&mut ui, "carol", "psst", Stamp::hm(9, 32));
    assert_screen(
        &screen(&mut ui, 36, 10),
        "\
┌ 0:status 1:bob 2:carol(1) ───────┐
│09:31 bob: a narrow terminal      │
│           still shows the whole  │
│           message                │
│                                  │
│                                  │
└──────────────────────────────────┘
carol: psst   (1 unread; Alt-2 or /o
bob>
 alice @ 127.0.0.1:5000 · online · 2",
    );
    // Esc swaps in the roster.
    ui.on_key(key(KeyCode::Esc));
    assert_screen(
        &screen(&mut ui, 36, 10),
        "\
┌ Online (2) ──────────────────────┐
│›bob                              │
│ carol                           1│
│                                  │
│                                  │
│                                  │
└──────────────────────────────────┘
carol: psst   (1 unread; Alt-2 or /o
bob>
 alice @ 127.0.0.1:5000 · online · 2",
    );
}

#[test]
fn scrolled_back_the_view_says_more_is_below() {
    let mut ui = logged_in(&["bob"]);
    type_line(&mut ui, "/open bob");
    for i in 0..30 {
        message(&mut ui, "bob", &format!("line {i}"), Stamp::hm(10, i));
    }
    let rows = screen(&mut ui, 60, 10);
    assert!(rows[5].contains("line 29"), "{rows:#?}");
    ui.on_key(key(KeyCode::PageUp));
    let rows = screen(&mut ui, 60, 10);
    assert!(rows[1].contains("line 20"), "{rows:#?}");
    assert!(rows[5].contains("5 more rows below"), "{rows:#?}");
    // Scrolling stops at the first line.
    for _ in 0..20 {
        ui.on_key(key(KeyCode::PageUp));
        screen(&mut ui, 60, 10);
    }
    assert!(screen(&mut ui, 60, 10)[1].contains("line 0"));
    ui.on_key(key(KeyCode::PageDown));
    assert!(screen(&mut ui, 60, 10)[1].contains("line 5"));
}

#[test]
fn hostile_text_cannot_reach_the_terminal() {
    let mut ui = logged_in(&["mallory"]);
    type_line(&mut ui, "/open mallory");
    message(
        &mut ui,
        "mallory",
        "\x1b[2J\x1b]0;pwned\x07two\nlines",
        Stamp::hm(9, 0),
    );
    let rows = screen(&mut ui, 60, 10);
    assert!(
        rows[1].ends_with("mallory: �[2J�]0;pwned�two        │"),
        "{rows:#?}"
    );
    assert!(rows[2].contains("lines"), "{rows:#?}");
    assert!(rows.iter().all(|r| !r.contains('\x1b')));
}

#[test]
fn wrap_breaks_at_spaces_and_counts_wide_characters() {
    assert_eq!(wrap("hello world", 20, 20), ["hello world"]);
    assert_eq!(
        wrap("hello world again", 8, 8),
        ["hello ", "world ", "again"]
    );
    assert_eq!(wrap("abcdefghij", 4, 4), ["abcd", "efgh", "ij"]);
    assert_eq!(wrap("你好世界", 5, 5), ["你好", "世界"]);
    assert_eq!(wrap("one\ntwo", 10, 10), ["one", "two"]);
    assert_eq!(wrap("", 10, 10), [""]);
    // A narrower first row (after the name), then full rows.
    assert_eq!(wrap("aaa bbb ccc", 4, 8), ["aaa ", "bbb ccc"]);
    // Nothing is ever lost, whatever the widths.
    let text = "Pigeon 信鸽 carries messages, 一条又一条, over UDP.";
    for first in 1..12 {
        for rest in 1..12 {
            let rows = wrap(text, first, rest);
            assert_eq!(rows.concat(), text, "{first} {rest}");
        }
    }
}

#[test]
fn fit_and_sanitize() {
    assert_eq!(fit("你好世界", 5), "你好");
    assert_eq!(fit("abc", 10), "abc");
    assert_eq!(sanitize("a\tb\u{7}c\nd"), "a b\u{fffd}c\nd");
}

#[test]
fn tiny_terminals_draw_without_breaking() {
    let mut ui = logged_in(&["bob", "剑痴"]);
    message(
        &mut ui,
        "剑痴",
        "你好！今天中午一起吃饭吗？",
        Stamp::hm(11, 58),
    );
    type_line(&mut ui, "/open 剑痴");
    for c in "一二三四五六七八九十".chars() {
        ui.on_key(key(KeyCode::Char(c)));
    }
    for (width, height) in [
        (1, 1),
        (2, 2),
        (3, 5),
        (5, 3),
        (10, 4),
        (20, 6),
        (59, 5),
        (60, 5),
    ] {
        let rows = screen(&mut ui, width, height);
        assert_eq!(rows.len(), height as usize);
        ui.on_key(key(KeyCode::Esc));
        screen(&mut ui, width, height);
        ui.on_key(key(KeyCode::Esc));
    }
}

#[test]
fn a_long_chinese_notice_keeps_its_hint_in_view() {
    let mut ui = logged_in(&["bob", "剑痴"]);
    // Fifty Chinese characters take a hundred columns.
    let text = "你好".repeat(25);
    message(&mut ui, "剑痴", &text, Stamp::hm(9, 31));
    for width in [80u16, 60, 45] {
        let rows = screen(&mut ui, width, 12);
        let notice = &rows[9];
        assert!(
            notice.ends_with("   (1 unread; Alt-1 or /open 剑痴)"),
            "{width} columns: {notice:?}"
        );
        assert!(notice.starts_with("剑痴: 你好"), "{notice:?}");
        assert!(notice.contains('…'), "the message is cut: {notice:?}");
        assert!(notice.width() <= usize::from(width), "{notice:?}");
    }
    // Wide enough for all of it: nothing is cut.
    let rows = screen(&mut ui, 160, 12);
    assert_eq!(
        rows[9],
        format!("剑痴: {text}   (1 unread; Alt-1 or /open 剑痴)")
    );
}

#[test]
fn fit_with_hint_cuts_the_text_by_columns() {
    assert_eq!(fit_with_hint("abc", " (x)", 10), "abc (x)");
    assert_eq!(fit_with_hint("你好你好你好", " (x)", 10), "你好… (x)");
    assert_eq!(fit_with_hint("abcdefgh", " (x)", 10), "abcde… (x)");
    // A hint wider than the line is cut itself.
    assert_eq!(fit_with_hint("abc", " (a long hint)", 6), "abc (a");
}
