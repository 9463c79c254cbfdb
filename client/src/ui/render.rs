//! Drawing the [`UiState`] with ratatui: the roster on the left, the
//! conversation tabs on the right, a notice line, the input line and a
//! status bar. Pure drawing into a `Frame`, so tests draw into ratatui's
//! test backend and read the screen back.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line as TextLine, Span};
use ratatui::widgets::{Block, Paragraph};
use ratatui::Frame;
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

use crate::events::Route;
use crate::ui::state::{Connection, Focus, Line, Mark, TabKind, UiState, Who};

/// Below this width the roster and the conversation take turns (Esc).
pub const NARROW_WIDTH: u16 = 60;

/// What the drawing could show, for [`UiState::viewed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    /// Rows of the conversation area.
    pub rows: usize,
    /// How far the tab in view can scroll back.
    pub max_scroll: usize,
}

/// Draws `ui` over the whole frame.
pub fn draw(frame: &mut Frame, ui: &UiState) -> View {
    let [main, notice, input, status] = Layout::vertical([
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());

    let view = if main.width >= NARROW_WIDTH {
        let roster_width = (main.width / 4).clamp(18, 28);
        let [roster, chat] =
            Layout::horizontal([Constraint::Length(roster_width), Constraint::Min(10)]).areas(main);
        draw_roster(frame, ui, roster);
        draw_chat(frame, ui, chat)
    } else if ui.focus() == Focus::Roster {
        draw_roster(frame, ui, main);
        View {
            rows: main.height.saturating_sub(2) as usize,
            max_scroll: 0,
        }
    } else {
        draw_chat(frame, ui, main)
    };
    draw_notice(frame, ui, notice);
    draw_input(frame, ui, input);
    draw_status(frame, ui, status);
    view
}

fn draw_roster(frame: &mut Frame, ui: &UiState, area: Rect) {
    let focused = ui.focus() == Focus::Roster;
    let border = if focused {
        Style::new().fg(Color::Cyan)
    } else {
        Style::new()
    };
    let block = Block::bordered()
        .border_style(border)
        .title(format!(" Online ({}) ", ui.roster().len()));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let rows = inner.height as usize;
    let width = inner.width as usize;
    // Keep the picked user in view.
    let skip = ui.roster_cursor().saturating_sub(rows.saturating_sub(1));
    let lines: Vec<TextLine> = ui
        .roster()
        .enumerate()
        .skip(skip)
        .take(rows)
        .map(|(i, user)| {
            let unread = ui.unread(user.name.as_str());
            let badge = if unread > 0 {
                format!(" {unread}")
            } else {
                String::new()
            };
            let picked = i == ui.roster_cursor();
            let marker = if picked && focused { "›" } else { " " };
            let name_room = width.saturating_sub(1 + badge.width());
            let name = fit(user.name.as_str(), name_room);
            let pad = " ".repeat(name_room.saturating_sub(name.width()));
            let mut style = Style::new();
            if user.seed_era {
                style = style.fg(Color::Gray);
            }
            if picked && focused {
                style = style.add_modifier(Modifier::REVERSED);
            }
            TextLine::from(vec![
                Span::raw(marker),
                Span::styled(format!("{name}{pad}"), style),
                Span::styled(
                    badge,
                    Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
                ),
            ])
        })
        .collect();
    frame.render_widget(Paragraph::new(lines), inner);
}

fn draw_chat(frame: &mut Frame, ui: &UiState, area: Rect) -> View {
    let mut titles = vec![Span::raw(" ")];
    for (i, tab) in ui.tabs().iter().enumerate() {
        let mut label = format!("{i}:{}", tab.title());
        if tab.unread > 0 {
            label.push_str(&format!("({})", tab.unread));
        }
        let style = if i == ui.active() {
            Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD)
        } else if tab.unread > 0 {
            Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD)
        } else {
            Style::new()
        };
        titles.push(Span::styled(label, style));
        titles.push(Span::raw(" "));
    }
    let block = Block::bordered().title(TextLine::from(titles));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let width = inner.width as usize;
    let height = inner.height as usize;
    let Some(tab) = ui.active_tab() else {
        return View {
            rows: height,
            max_scroll: 0,
        };
    };
    let mut rows: Vec<TextLine> = Vec::new();
    for line in &tab.lines {
        rows.extend(line_rows(line, ui, width));
    }
    if let (true, TabKind::Chat(peer)) = (tab.lines.is_empty(), &tab.kind) {
        rows.push(TextLine::styled(
            fit(
                &format!("No messages with {peer} yet. Type below and press Enter."),
                width,
            ),
            Style::new().fg(Color::DarkGray),
        ));
    }
    let max_scroll = rows.len().saturating_sub(height);
    let scroll = tab.scroll.min(max_scroll);
    let end = rows.len() - scroll;
    let start = end.saturating_sub(height);
    let mut visible: Vec<TextLine> = rows.drain(start..end).collect();
    if scroll > 0 {
        // Say there is more below.
        if let Some(last) = visible.last_mut() {
            *last = TextLine::styled(
                fit(&format!("-- {scroll} more rows below (PageDown) --"), width),
                Style::new().fg(Color::Yellow),
            );
        }
    }
    frame.render_widget(Paragraph::new(visible), inner);
    View {
        rows: height,
        max_scroll,
    }
}

/// The rows one line of a tab takes at `width` columns: time, who, text,
/// and the delivery mark, wrapped with the text indented under itself.
fn line_rows<'a>(line: &'a Line, ui: &UiState, width: usize) -> Vec<TextLine<'a>> {
    let dim = if line.earlier {
        Style::new().fg(Color::DarkGray)
    } else {
        Style::new()
    };
    let time = if line.at.0.is_empty() {
        String::new()
    } else {
        format!("{} ", line.at.0)
    };
    let (who, who_style) = match &line.who {
        Who::Me => (format!("{}: ", ui.me()), Style::new().fg(Color::Cyan)),
        Who::Peer(name) => (format!("{name}: "), Style::new().fg(Color::Green)),
        Who::System => (String::new(), Style::new().fg(Color::DarkGray)),
    };
    let who_style = if line.earlier { dim } else { who_style };
    let (mark, mark_style) = match line.mark {
        Mark::None => ("", Style::new()),
        Mark::Sending => (" …", Style::new().fg(Color::DarkGray)),
        Mark::Sent => (" ·", Style::new().fg(Color::DarkGray)),
        Mark::Stored => (" ✉ waits for them", Style::new().fg(Color::Yellow)),
        Mark::Delivered => (" ✓", Style::new().fg(Color::Green)),
        Mark::Failed => (" ✗ failed", Style::new().fg(Color::Red)),
    };
    let body_style = match (&line.who, line.mark) {
        (_, Mark::Failed) => Style::new().fg(Color::Red),
        (Who::System, _) => Style::new().fg(Color::Gray),
        _ => dim,
    };
    let prefix = time.width() + who.width();
    let indent = if prefix * 2 < width { prefix } else { 0 };
    let body = sanitize(&line.text);
    let mut pieces = wrap(
        &body,
        width.saturating_sub(prefix).max(1),
        width.saturating_sub(indent).max(1),
    );
    // The mark goes after the text, on a row of its own if it does not fit.
    let last_room = if pieces.len() == 1 {
        width.saturating_sub(prefix)
    } else {
        width.saturating_sub(indent)
    };
    let mark_on_new_row = pieces
        .last()
        .is_some_and(|last| last.width() + mark.width() > last_room);
    if mark_on_new_row && !mark.is_empty() {
        pieces.push(String::new());
    }
    let count = pieces.len();
    pieces
        .into_iter()
        .enumerate()
        .map(|(i, piece)| {
            let mut spans = if i == 0 {
                vec![
                    Span::styled(time.clone(), Style::new().fg(Color::DarkGray)),
                    Span::styled(who.clone(), who_style),
                ]
            } else {
                vec![Span::raw(" ".repeat(indent))]
            };
            spans.push(Span::styled(piece, body_style));
            if i + 1 == count && !mark.is_empty() {
                spans.push(Span::styled(
                    mark.trim_start_matches(' ').to_owned(),
                    mark_style,
                ));
                if !mark_on_new_row {
                    // Put the space back between the text and the mark.
                    let at = spans.len() - 1;
                    spans.insert(at, Span::raw(" "));
                }
            }
            TextLine::from(spans)
        })
        .collect()
}

fn draw_notice(frame: &mut Frame, ui: &UiState, area: Rect) {
    if let Some((text, hint)) = ui.notice_parts() {
        let line = fit_with_hint(
            &sanitize_one_line(text),
            &sanitize_one_line(hint),
            area.width as usize,
        );
        frame.render_widget(
            Paragraph::new(line).style(Style::new().fg(Color::Yellow)),
            area,
        );
    }
}

/// `text` then `hint` in `width` columns: when both do not fit, the text
/// is cut (ending in `…`) so that the hint shows whole; only a hint wider
/// than the line is cut itself.
pub fn fit_with_hint(text: &str, hint: &str, width: usize) -> String {
    if text.width() + hint.width() <= width {
        return format!("{text}{hint}");
    }
    let room = width.saturating_sub(hint.width());
    if room < 2 {
        return fit(&format!("{text}{hint}"), width);
    }
    format!("{}…{hint}", fit(text, room - 1))
}

fn draw_input(frame: &mut Frame, ui: &UiState, area: Rect) {
    let prompt = match ui.active_tab().map(|t| &t.kind) {
        Some(TabKind::Chat(peer)) => format!("{peer}> "),
        _ => "> ".to_owned(),
    };
    let prompt = fit(&prompt, (area.width as usize) / 3);
    let room = (area.width as usize).saturating_sub(prompt.width());
    let (text, cursor) = ui.input().view(room);
    let line = TextLine::from(vec![
        Span::styled(prompt.clone(), Style::new().fg(Color::Cyan)),
        Span::raw(text),
    ]);
    frame.render_widget(Paragraph::new(line), area);
    if ui.focus() == Focus::Input {
        let x =
            area.x + (prompt.width() + cursor).min(area.width.saturating_sub(1) as usize) as u16;
        frame.set_cursor_position((x, area.y));
    }
}

fn draw_status(frame: &mut Frame, ui: &UiState, area: Rect) {
    let connection = match (ui.connection(), ui.server()) {
        (Connection::Connecting, Some(server)) => format!("connecting to {server}…"),
        (Connection::Connecting, None) => "connecting…".to_owned(),
        (Connection::Online, _) => "online".to_owned(),
        (Connection::Reconnecting, _) => "reconnecting…".to_owned(),
        (Connection::Ended, _) => "offline".to_owned(),
    };
    let mut text = format!(" {}", ui.me());
    if let Some(endpoint) = ui.endpoint() {
        text.push_str(&format!(" @ {endpoint}"));
    }
    // How the conversation in view reaches its peer.
    let route = ui
        .tabs()
        .get(ui.active())
        .and_then(|tab| match (&tab.kind, tab.route) {
            (TabKind::Chat(peer), Some(Route::Direct(_))) => Some(format!(" · {peer} direct")),
            (TabKind::Chat(peer), Some(Route::Relayed)) => Some(format!(" · {peer} relayed")),
            _ => None,
        });
    let connection = format!("{connection}{}", route.unwrap_or_default());
    let others = ui.roster().len();
    text.push_str(&format!(
        " · {connection} · {others} other{} · bell {} │ Esc roster · Ctrl-N/P tabs · PgUp/PgDn scroll · /help · Ctrl-C quit",
        if others == 1 { "" } else { "s" },
        if ui.bell() { "on" } else { "off" }
    ));
    let text = fit(&text, area.width as usize);
    let pad = " ".repeat((area.width as usize).saturating_sub(text.width()));
    frame.render_widget(
        Paragraph::new(format!("{text}{pad}")).style(Style::new().add_modifier(Modifier::REVERSED)),
        area,
    );
}

/// Text safe to put on a terminal: tabs become spaces, other control
/// characters (escape sequences a hostile peer might send) become `�`;
/// line breaks stay, for [`wrap`].
pub fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\n' => '\n',
            '\t' => ' ',
            c if c.is_control() => '\u{fffd}',
            c => c,
        })
        .collect()
}

fn sanitize_one_line(text: &str) -> String {
    sanitize(text).replace('\n', " ")
}

/// The longest start of `text` that fits in `width` columns.
pub fn fit(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = c.width().unwrap_or(0);
        if used + w > width {
            break;
        }
        out.push(c);
        used += w;
    }
    out
}

/// Splits `text` into rows: the first at most `first` columns wide, the
/// rest at most `rest`. Line breaks in the text start new rows; a row
/// breaks after its last space when a word does not fit, and inside a
/// word only when the word alone is too long. Wide characters (CJK) count
/// two columns and are never split.
pub fn wrap(text: &str, first: usize, rest: usize) -> Vec<String> {
    let mut rows: Vec<String> = Vec::new();
    for paragraph in text.split('\n') {
        let mut row = String::new();
        let mut used = 0;
        for c in paragraph.chars() {
            let w = c.width().unwrap_or(0);
            loop {
                let limit = if rows.is_empty() { first } else { rest }.max(1);
                if used + w <= limit || row.is_empty() {
                    break;
                }
                // The row is full: break after its last space if the word
                // being typed has one before it, else right here.
                let carried = match row.rfind(' ') {
                    Some(at) if at + 1 < row.len() => row.split_off(at + 1),
                    _ => String::new(),
                };
                rows.push(std::mem::replace(&mut row, carried));
                used = row.width();
            }
            row.push(c);
            used += w;
        }
        rows.push(row);
    }
    rows
}

#[cfg(test)]
mod tests;
