//! The messages every front end (the plain console, the terminal UI)
//! takes besides the client's events.

use actix::Message;

use crate::client::ClientHandle;

/// Attach the client whose events this front end receives.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Attach(pub ClientHandle);

/// Log out and exit (Ctrl-C outside raw mode, SIGTERM).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Quit;
