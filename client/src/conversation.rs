//! `Conversation`: one chat's history, bounded, without sockets.

use std::collections::VecDeque;

use pigeon_shared::{TalkTime, UserName};

/// Lines a conversation keeps in memory by default.
pub const DEFAULT_HISTORY_LINES: usize = 1000;

/// Who wrote a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The peer wrote it.
    Incoming,
    /// This user wrote it.
    Outgoing,
}

/// One message in a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatLine {
    pub direction: Direction,
    /// The writer's local time of day, as sent.
    pub time: TalkTime,
    pub text: String,
}

/// The history of a chat with one peer; the oldest lines go first once
/// `max_lines` is reached.
#[derive(Debug, Clone)]
pub struct Conversation {
    peer: UserName,
    lines: VecDeque<ChatLine>,
    max_lines: usize,
}

impl Conversation {
    /// An empty conversation with `peer`.
    pub fn new(peer: UserName, max_lines: usize) -> Self {
        Self {
            peer,
            lines: VecDeque::new(),
            max_lines: max_lines.max(1),
        }
    }

    /// Who this conversation is with.
    pub fn peer(&self) -> &UserName {
        &self.peer
    }

    /// Adds a line.
    pub fn record(&mut self, line: ChatLine) {
        if self.lines.len() == self.max_lines {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    /// The lines, oldest first.
    pub fn lines(&self) -> impl ExactSizeIterator<Item = &ChatLine> {
        self.lines.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> ChatLine {
        ChatLine {
            direction: Direction::Incoming,
            time: TalkTime::parse("9:05:07").unwrap(),
            text: text.into(),
        }
    }

    #[test]
    fn history_keeps_order_and_drops_the_oldest_past_its_bound() {
        let mut c = Conversation::new(UserName::parse("bob").unwrap(), 2);
        c.record(line("one"));
        c.record(line("two"));
        c.record(line("three"));
        let texts: Vec<_> = c.lines().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["two", "three"]);
    }
}
