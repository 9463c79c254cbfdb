//! Reading the terminal on a thread of its own: keys, pastes and resizes
//! reach the terminal UI in batches of everything already waiting, so a
//! burst of typing is handled (and drawn) once, not once per key.

use std::io;
use std::time::Duration;

use crossterm::event::Event;
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;

/// Events read ahead of the UI; past this the reader waits (and the
/// terminal's own buffer holds the rest).
const QUEUE: usize = 4096;

/// Most events handed over in one batch.
pub const MAX_BATCH: usize = 1024;

/// Starts the reader; its batches end when the terminal fails (the last
/// item is the error).
///
/// The reader blocks in crossterm's `read`, which waits for the terminal
/// with a level-triggered `poll` (crossterm's `use-dev-tty`): an
/// edge-triggered wait would sleep with a burst half read.
pub fn terminal_events() -> io::Result<impl Stream<Item = Vec<io::Result<Event>>>> {
    let (tx, mut rx) = mpsc::channel(QUEUE);
    std::thread::Builder::new()
        .name("terminal-input".into())
        .spawn(move || loop {
            let event = read_event();
            let failed = event.is_err();
            if tx.blocking_send(event).is_err() || failed {
                break;
            }
        })?;
    Ok(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)).ready_chunks(MAX_BATCH))
}

/// The next event; an interrupted wait is tried again.
fn read_event() -> io::Result<Event> {
    loop {
        match crossterm::event::read() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                std::thread::sleep(Duration::from_millis(1));
            }
            other => return other,
        }
    }
}
