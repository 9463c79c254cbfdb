//! The terminal UI's state and drawing, kept apart from the terminal: the
//! [`state`] is plain data driven by keys and client events, [`render`]
//! draws it with ratatui, and [`crate::tui_console_actor`] connects both to
//! the real terminal.

pub mod input;
pub mod render;
pub mod state;
pub mod terminal_input;
