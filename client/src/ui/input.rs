//! The input line: editing, history (Up/Down) and name completion (Tab).
//! Plain data, no terminal: the key handling in [`super::state`] drives it
//! and the renderer reads [`LineEditor::view`].

use unicode_width::UnicodeWidthChar;

/// Longest line the editor holds, in characters (a paste beyond it is cut
/// at the limit; the message limits are checked on sending).
pub const MAX_INPUT_CHARS: usize = 64 * 1024;

/// Lines kept for Up/Down.
pub const MAX_INPUT_HISTORY: usize = 500;

/// The input line. See the module documentation.
#[derive(Debug, Clone, Default)]
pub struct LineEditor {
    chars: Vec<char>,
    /// Cursor position, in characters from the start.
    cursor: usize,
    history: Vec<String>,
    /// Where Up/Down stand in `history` (`None`: editing a new line), and
    /// the new line put aside meanwhile.
    browsing: Option<usize>,
    draft: Vec<char>,
    completion: Option<Completion>,
}

/// A Tab completion in progress: repeated Tabs cycle through `matches`.
#[derive(Debug, Clone)]
struct Completion {
    start: usize,
    matches: Vec<String>,
    index: usize,
}

impl LineEditor {
    /// An empty line.
    pub fn new() -> Self {
        Self::default()
    }

    /// The text as typed.
    pub fn text(&self) -> String {
        self.chars.iter().collect()
    }

    /// Whether nothing is typed.
    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    /// The cursor, in characters from the start.
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    /// Replaces the line with `text`, cursor at the end.
    pub fn set_text(&mut self, text: &str) {
        self.chars = text.chars().take(MAX_INPUT_CHARS).collect();
        self.cursor = self.chars.len();
        self.completion = None;
    }

    /// Types `c` at the cursor.
    pub fn insert(&mut self, c: char) {
        self.completion = None;
        if self.chars.len() >= MAX_INPUT_CHARS {
            return;
        }
        self.chars.insert(self.cursor, c);
        self.cursor += 1;
    }

    /// Types `text` at the cursor (a paste); line breaks become spaces.
    pub fn insert_str(&mut self, text: &str) {
        for c in text.chars() {
            let c = if c == '\n' || c == '\r' { ' ' } else { c };
            if !c.is_control() {
                self.insert(c);
            }
        }
    }

    /// Deletes the character before the cursor.
    pub fn backspace(&mut self) {
        self.completion = None;
        if self.cursor > 0 {
            self.cursor -= 1;
            self.chars.remove(self.cursor);
        }
    }

    /// Deletes the character under the cursor.
    pub fn delete(&mut self) {
        self.completion = None;
        if self.cursor < self.chars.len() {
            self.chars.remove(self.cursor);
        }
    }

    pub fn left(&mut self) {
        self.completion = None;
        self.cursor = self.cursor.saturating_sub(1);
    }

    pub fn right(&mut self) {
        self.completion = None;
        self.cursor = (self.cursor + 1).min(self.chars.len());
    }

    pub fn home(&mut self) {
        self.completion = None;
        self.cursor = 0;
    }

    pub fn end(&mut self) {
        self.completion = None;
        self.cursor = self.chars.len();
    }

    /// Moves to the start of the word before the cursor.
    pub fn word_left(&mut self) {
        self.completion = None;
        self.cursor = self.word_start_before(self.cursor);
    }

    /// Moves past the end of the word after the cursor.
    pub fn word_right(&mut self) {
        self.completion = None;
        let mut at = self.cursor;
        while at < self.chars.len() && self.chars[at].is_whitespace() {
            at += 1;
        }
        while at < self.chars.len() && !self.chars[at].is_whitespace() {
            at += 1;
        }
        self.cursor = at;
    }

    /// Deletes the word before the cursor (Ctrl-W).
    pub fn delete_word(&mut self) {
        self.completion = None;
        let start = self.word_start_before(self.cursor);
        self.chars.drain(start..self.cursor);
        self.cursor = start;
    }

    /// Deletes from the start of the line to the cursor (Ctrl-U).
    pub fn delete_to_start(&mut self) {
        self.completion = None;
        self.chars.drain(..self.cursor);
        self.cursor = 0;
    }

    /// Deletes from the cursor to the end of the line (Ctrl-K).
    pub fn delete_to_end(&mut self) {
        self.completion = None;
        self.chars.truncate(self.cursor);
    }

    fn word_start_before(&self, from: usize) -> usize {
        let mut at = from.min(self.chars.len());
        while at > 0 && self.chars[at - 1].is_whitespace() {
            at -= 1;
        }
        while at > 0 && !self.chars[at - 1].is_whitespace() {
            at -= 1;
        }
        at
    }

    /// Takes the line for sending: the editor is emptied and the line (if
    /// not blank) goes into the Up/Down history.
    pub fn submit(&mut self) -> String {
        let line = self.text();
        self.chars.clear();
        self.cursor = 0;
        self.browsing = None;
        self.draft.clear();
        self.completion = None;
        if !line.trim().is_empty() && self.history.last() != Some(&line) {
            if self.history.len() >= MAX_INPUT_HISTORY {
                self.history.remove(0);
            }
            self.history.push(line.clone());
        }
        line
    }

    /// Up: the previous line of history (the line being typed is kept
    /// and comes back at the bottom).
    pub fn history_prev(&mut self) {
        self.completion = None;
        let next = match self.browsing {
            None if self.history.is_empty() => return,
            None => {
                self.draft = std::mem::take(&mut self.chars);
                self.history.len() - 1
            }
            Some(0) => return,
            Some(at) => at - 1,
        };
        self.browsing = Some(next);
        self.show_history(next);
    }

    /// Down: the next line of history, and after the last, the line that
    /// was being typed.
    pub fn history_next(&mut self) {
        self.completion = None;
        let Some(at) = self.browsing else {
            return;
        };
        if at + 1 < self.history.len() {
            self.browsing = Some(at + 1);
            self.show_history(at + 1);
        } else {
            self.browsing = None;
            self.chars = std::mem::take(&mut self.draft);
            self.cursor = self.chars.len();
        }
    }

    fn show_history(&mut self, at: usize) {
        if let Some(line) = self.history.get(at) {
            self.chars = line.chars().collect();
            self.cursor = self.chars.len();
        }
    }

    /// Tab: completes the word before the cursor to one of `names` (case
    /// is ignored in the match; the name is written as it is). A unique
    /// match gets a space after it; repeated Tabs cycle through several.
    /// Returns whether anything changed.
    pub fn complete<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) -> bool {
        if let Some(mut completion) = self.completion.take() {
            if completion.matches.len() > 1 {
                completion.index = (completion.index + 1) % completion.matches.len();
                let name = completion.matches[completion.index].clone();
                self.replace_word(completion.start, &name);
                self.completion = Some(completion);
                return true;
            }
        }
        let start = self.word_start_before(self.cursor);
        let prefix: String = self.chars[start..self.cursor].iter().collect();
        if prefix.is_empty() || prefix.starts_with('/') {
            return false;
        }
        let lower = prefix.to_lowercase();
        let mut matches: Vec<String> = names
            .into_iter()
            .filter(|name| name.to_lowercase().starts_with(&lower))
            .map(str::to_owned)
            .collect();
        matches.sort();
        matches.dedup();
        match matches.len() {
            0 => false,
            1 => {
                let name = format!("{} ", matches[0]);
                self.replace_word(start, &name);
                true
            }
            _ => {
                let name = matches[0].clone();
                self.replace_word(start, &name);
                self.completion = Some(Completion {
                    start,
                    matches,
                    index: 0,
                });
                true
            }
        }
    }

    /// Replaces the characters from `start` to the cursor with `text`.
    fn replace_word(&mut self, start: usize, text: &str) {
        let end = self.cursor.min(self.chars.len());
        let start = start.min(end);
        let room = MAX_INPUT_CHARS.saturating_sub(self.chars.len() - (end - start));
        let new: Vec<char> = text.chars().take(room).collect();
        let len = new.len();
        self.chars.splice(start..end, new);
        self.cursor = start + len;
    }

    /// What fits in `width` terminal columns around the cursor: the
    /// visible text and the cursor's column in it. Wide characters (CJK)
    /// take two columns and are never cut in half.
    pub fn view(&self, width: usize) -> (String, usize) {
        let width = width.max(2);
        let col = |c: &char| c.width().unwrap_or(0);
        // Start far enough right that the cursor (and one column for it)
        // fits.
        let mut start = 0;
        let mut before: usize = self.chars[..self.cursor].iter().map(col).sum();
        while before + 1 > width && start < self.cursor {
            before -= col(&self.chars[start]);
            start += 1;
        }
        let mut text = String::new();
        let mut used = 0;
        for c in &self.chars[start..] {
            let w = col(c);
            if used + w > width {
                break;
            }
            text.push(*c);
            used += w;
        }
        (text, before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(text: &str) -> LineEditor {
        let mut e = LineEditor::new();
        e.insert_str(text);
        e
    }

    #[test]
    fn typing_and_moving_edit_at_the_cursor() {
        let mut e = typed("helo");
        e.left();
        e.insert('l');
        assert_eq!(e.text(), "hello");
        e.home();
        e.insert('>');
        e.end();
        e.insert('!');
        assert_eq!(e.text(), ">hello!");
        e.backspace();
        e.home();
        e.delete();
        assert_eq!(e.text(), "hello");
        assert_eq!(e.cursor(), 0);
        e.left();
        e.backspace();
        assert_eq!(e.text(), "hello", "nothing before the start");
    }

    #[test]
    fn words_are_skipped_and_deleted_whole() {
        let mut e = typed("/msg bob hello there");
        e.delete_word();
        assert_eq!(e.text(), "/msg bob hello ");
        e.word_left();
        e.word_left();
        assert_eq!(e.cursor(), 5);
        e.word_right();
        assert_eq!(e.cursor(), 8);
        e.delete_to_end();
        assert_eq!(e.text(), "/msg bob");
        e.word_left();
        e.delete_to_start();
        assert_eq!(e.text(), "bob");
    }

    #[test]
    fn pasted_line_breaks_become_spaces_and_controls_are_dropped() {
        let e = typed("one\ntwo\r\x1b[2Jthree");
        assert_eq!(e.text(), "one two [2Jthree");
    }

    #[test]
    fn the_line_is_bounded() {
        let mut e = typed(&"x".repeat(MAX_INPUT_CHARS + 10));
        assert_eq!(e.text().len(), MAX_INPUT_CHARS);
        e.insert('y');
        assert_eq!(e.text().len(), MAX_INPUT_CHARS);
    }

    #[test]
    fn up_and_down_walk_the_history_and_keep_the_draft() {
        let mut e = LineEditor::new();
        for line in ["first", "second", "second", "  "] {
            e.insert_str(line);
            e.submit();
        }
        e.insert_str("draft");
        e.history_prev();
        assert_eq!(e.text(), "second", "repeats and blanks are not kept");
        e.history_prev();
        assert_eq!(e.text(), "first");
        e.history_prev();
        assert_eq!(e.text(), "first");
        e.history_next();
        assert_eq!(e.text(), "second");
        e.history_next();
        assert_eq!(e.text(), "draft");
        e.history_next();
        assert_eq!(e.text(), "draft");
    }

    #[test]
    fn tab_completes_a_unique_name_with_a_space() {
        let mut e = typed("/open ca");
        assert!(e.complete(["alice", "Carol", "bob"]));
        assert_eq!(e.text(), "/open Carol ");
        let mut e = typed("/open x");
        assert!(!e.complete(["alice"]));
        assert_eq!(e.text(), "/open x");
    }

    #[test]
    fn repeated_tabs_cycle_through_several_matches() {
        let mut e = typed("hi b");
        let names = ["bob", "bea", "alice", "bill"];
        assert!(e.complete(names));
        assert_eq!(e.text(), "hi bea");
        e.complete(names);
        assert_eq!(e.text(), "hi bill");
        e.complete(names);
        assert_eq!(e.text(), "hi bob");
        e.complete(names);
        assert_eq!(e.text(), "hi bea");
        // Typing ends the cycle; the next Tab starts from the new word.
        e.insert(' ');
        assert!(!e.complete(names));
    }

    #[test]
    fn commands_are_not_completed_as_names() {
        let mut e = typed("/b");
        assert!(!e.complete(["bob"]));
    }

    #[test]
    fn the_view_follows_the_cursor_in_columns() {
        let e = typed("abcdefghij");
        assert_eq!(e.view(20), ("abcdefghij".into(), 10));
        let (text, col) = e.view(5);
        assert_eq!((text.as_str(), col), ("ghij", 4));
        // Chinese characters are two columns wide.
        let mut e = typed("你好世界");
        assert_eq!(e.view(20), ("你好世界".into(), 8));
        let (text, col) = e.view(5);
        assert_eq!((text.as_str(), col), ("世界", 4));
        e.home();
        let (text, col) = e.view(5);
        assert_eq!((text.as_str(), col), ("你好", 0));
    }
}
