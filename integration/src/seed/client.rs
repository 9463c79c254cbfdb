//! The seed's client, reproduced on purpose, defects included (see the
//! [module docs](super)).
//!
//! It mirrors `btnlogin_Click`, `ReceiveMessage`, `GetUserList` and
//! `SendMessage` from section 3 of the seed. The seed does not show its chat
//! window (`ChatForm`), its logout button or its list-view helpers; what this
//! client assumes about them:
//!
//! - **List view.** `AddItemToListView(item)` appends the raw item
//!   `"name,ip:port"` with no duplicate check; `RemoveItemFromListView(name)`
//!   removes every item whose name (the text before its first `,`) equals
//!   `name`.
//! - **Chat window.** The user opens one by double-clicking a list item; its
//!   `Text` (title) is the peer's name, which is what the receive loop compares
//!   with the sender of a `talk`. Opening a window for a name that already has
//!   one does nothing ([`SeedClient::open_chat`]). Only messages whose sender
//!   has an open window are shown; the others are dropped, as in the seed.
//! - **Sending a message** happens from that window, so [`SeedClient::talk`]
//!   opens the window for the peer if needed, then sends
//!   `talk,<long time>,<own name>,<text>` from a new anonymous socket bound to
//!   `0.0.0.0:0` to the endpoint parsed (`Split(':')`, `IPAddress.Parse`,
//!   `int.Parse`) from the peer's list item. `<long time>` is zh-CN
//!   `DateTime.Now.ToLongTimeString()`, i.e. `H:mm:ss` with no leading zero on
//!   the hour; this client takes UTC from the system clock.
//! - **Logout** (`btnLogout_Click`) sends `logout,<name>,<endpoint>` from a new
//!   anonymous socket, like the login; the receive loop keeps running.
//!
//! Differences that exist only to make it usable in tests: the blocking calls
//! wake up every few milliseconds to look at a stop flag so that dropping the
//! client ends its threads; the `Accept` connection has a connect timeout; and
//! the seed's modal "连接失败" message box (which would block the receive
//! thread until dismissed) becomes a log line, as if dismissed at once.

use std::io;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{
    dotnet_endpoint_string, dotnet_int_parse, dotnet_split, parse_seed_endpoint,
    read_dotnet_string, receive_loop, send_anonymous, MAX_DOTNET_STRING, POLL_INTERVAL,
};

/// How long the `Accept` handler waits for the TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How often the wait helpers look at the state.
const WAIT_POLL: Duration = Duration::from_millis(5);

/// A message shown in a chat window: `(from, time, text)`, the arguments of
/// the seed's `ShowTalkInfo(splitstring[2], splitstring[1], splitstring[3])`.
pub type TalkInfo = (String, String, String);

/// What the client shows, as seen by [`SeedClient::wait_until`].
#[derive(Clone, Debug, Default)]
pub struct SeedClientView {
    /// The list view's items, raw `"name,ip:port"` strings, in order.
    pub users: Vec<String>,
    /// Names whose chat window is open.
    pub open_chats: Vec<String>,
    /// Every message shown in a chat window, in arrival order.
    pub received: Vec<TalkInfo>,
    /// One line per datagram received and per notable event (the message
    /// box, the end of a loop).
    pub log: Vec<String>,
    /// False once the receive loop has ended.
    pub receiving: bool,
}

/// State shared by the client's threads.
struct Shared {
    view: Mutex<SeedClientView>,
    stop: AtomicBool,
    /// The `GetUserList` threads, joined on drop.
    helpers: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn view(&self) -> MutexGuard<'_, SeedClientView> {
        lock(&self.view)
    }

    fn add_log(&self, line: String) {
        self.view().log.push(line);
    }
}

/// Locks a mutex, ignoring poisoning (a panicking test thread must not make
/// every later call panic too).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A logged-in seed client.
pub struct SeedClient {
    name: String,
    endpoint: SocketAddr,
    server: SocketAddr,
    shared: Arc<Shared>,
    receive_thread: Option<JoinHandle<()>>,
    /// Index into `received` after the last message returned by
    /// [`SeedClient::wait_for_message`].
    cursor: Mutex<usize>,
}

impl SeedClient {
    /// Mirrors `btnlogin_Click` and `SendMessage`: binds the receive socket at
    /// `local` (its real bound address, useful with port 0, becomes the
    /// client's endpoint, the seed's `clientIPEndPoint`), starts the receive
    /// thread, then sends `login,<name>,<endpoint>` to `server` from a separate
    /// anonymous socket bound to `0.0.0.0:0`.
    pub fn login(name: &str, local: SocketAddr, server: SocketAddr) -> io::Result<SeedClient> {
        let socket = UdpSocket::bind(local)?;
        socket.set_read_timeout(Some(POLL_INTERVAL))?;
        let endpoint = socket.local_addr()?;
        let shared = Arc::new(Shared {
            view: Mutex::new(SeedClientView {
                receiving: true,
                ..SeedClientView::default()
            }),
            stop: AtomicBool::new(false),
            helpers: Mutex::new(Vec::new()),
        });
        let receive_thread = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("seed-client-{name}"))
                .spawn(move || receive_message(&socket, &shared))?
        };
        let client = SeedClient {
            name: name.to_string(),
            endpoint,
            server,
            shared,
            receive_thread: Some(receive_thread),
            cursor: Mutex::new(0),
        };
        let login = format!("login,{name},{}", dotnet_endpoint_string(endpoint));
        send_anonymous(&login, server)?;
        Ok(client)
    }

    /// The user name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The receive socket's address, the endpoint this client claims.
    pub fn endpoint(&self) -> SocketAddr {
        self.endpoint
    }

    /// The list view's items, raw `"name,ip:port"` strings.
    pub fn users(&self) -> Vec<String> {
        self.shared.view().users.clone()
    }

    /// The names in the list view (the text before each item's first `,`).
    pub fn user_names(&self) -> Vec<String> {
        self.shared
            .view()
            .users
            .iter()
            .map(|item| item_name(item).to_string())
            .collect()
    }

    /// Double-clicks `name` in the list: opens a chat window titled `name`, so
    /// that its `talk` messages are shown from now on. No-op when one is open.
    pub fn open_chat(&self, name: &str) {
        let mut view = self.shared.view();
        if !view.open_chats.iter().any(|open| open == name) {
            view.open_chats.push(name.to_string());
        }
    }

    /// Sends `text` to `to` from its chat window (opening it if needed):
    /// `talk,<H:mm:ss>,<own name>,<text>` from a new anonymous socket to the
    /// endpoint in `to`'s list item. Fails if `to` is not in the list or its
    /// endpoint does not parse the seed's way.
    pub fn talk(&self, to: &str, text: &str) -> io::Result<()> {
        let item = self
            .shared
            .view()
            .users
            .iter()
            .find(|item| item_name(item) == to)
            .cloned()
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, format!("{to} is not in the list"))
            })?;
        let endpoint_text = item.split_once(',').map_or("", |(_, rest)| rest);
        let endpoint = parse_seed_endpoint(endpoint_text)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        self.open_chat(to);
        let message = format!("talk,{},{},{text}", long_time_string(), self.name);
        send_anonymous(&message, endpoint)
    }

    /// Every message shown in a chat window, as `(from, time, text)`.
    pub fn received(&self) -> Vec<TalkInfo> {
        self.shared.view().received.clone()
    }

    /// One line per datagram received and per notable event.
    pub fn log(&self) -> Vec<String> {
        self.shared.view().log.clone()
    }

    /// Sends `logout,<name>,<endpoint>` to the server from a new anonymous
    /// socket (assumed `btnLogout_Click`). The receive loop keeps running.
    pub fn logout(&self) -> io::Result<()> {
        let message = format!(
            "logout,{},{}",
            self.name,
            dotnet_endpoint_string(self.endpoint)
        );
        send_anonymous(&message, self.server)
    }

    /// False once the receive loop has ended.
    pub fn is_receiving(&self) -> bool {
        self.shared.view().receiving
    }

    /// Polls every few milliseconds until `pred` holds, or `timeout` passes.
    /// Returns whether it held. `pred` runs with the client's state locked, so
    /// it must not call back into this client.
    pub fn wait_until(&self, timeout: Duration, pred: impl Fn(&SeedClientView) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(&self.shared.view()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(WAIT_POLL);
        }
    }

    /// Waits until an item for `name` is in the list.
    pub fn wait_for_user(&self, name: &str, timeout: Duration) -> bool {
        self.wait_until(timeout, |view| {
            view.users.iter().any(|item| item_name(item) == name)
        })
    }

    /// Waits until no item for `name` is in the list.
    pub fn wait_for_user_gone(&self, name: &str, timeout: Duration) -> bool {
        self.wait_until(timeout, |view| {
            !view.users.iter().any(|item| item_name(item) == name)
        })
    }

    /// Waits for the next shown message from `from`, after the last one this
    /// method returned, and returns it; `None` on timeout.
    pub fn wait_for_message(&self, from: &str, timeout: Duration) -> Option<TalkInfo> {
        let mut cursor = lock(&self.cursor);
        let deadline = Instant::now() + timeout;
        loop {
            {
                let view = self.shared.view();
                let start = (*cursor).min(view.received.len());
                if let Some(offset) = view.received[start..].iter().position(|m| m.0 == from) {
                    *cursor = start + offset + 1;
                    return Some(view.received[start + offset].clone());
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(WAIT_POLL);
        }
    }

    /// Waits until the receive loop has ended.
    pub fn wait_for_loop_end(&self, timeout: Duration) -> bool {
        self.wait_until(timeout, |view| !view.receiving)
    }
}

impl Drop for SeedClient {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(handle) = self.receive_thread.take() {
            let _ = handle.join();
        }
        let helpers: Vec<_> = lock(&self.shared.helpers).drain(..).collect();
        for handle in helpers {
            let _ = handle.join();
        }
    }
}

impl std::fmt::Debug for SeedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeedClient")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// The name part of a list item: the text before its first `,`.
fn item_name(item: &str) -> &str {
    item.split_once(',').map_or(item, |(name, _)| name)
}

/// zh-CN `DateTime.ToLongTimeString()` (`H:mm:ss`) of the current UTC time.
fn long_time_string() -> String {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        % 86_400;
    format!(
        "{}:{:02}:{:02}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

/// Mirrors the client's `ReceiveMessage`. Any failure outside the `Accept`
/// handler's own `try` (a missing field, a socket error) leaves the loop, as
/// the seed's `catch { break; }` does.
fn receive_message(socket: &UdpSocket, shared: &Arc<Shared>) {
    let reason = receive_loop(socket, &shared.stop, |message, remote| {
        shared.add_log(format!("{}:{message}", dotnet_endpoint_string(remote)));
        handle_message(message, remote, shared)
    });
    let mut view = shared.view();
    view.receiving = false;
    view.log.push(format!("receive loop ended ({reason})"));
}

/// The body of the seed's `try` block for one message. An `Err` is the
/// exception that ends the loop.
fn handle_message(message: &str, remote: SocketAddr, shared: &Arc<Shared>) -> Result<(), String> {
    let splitstring = dotnet_split(message, ',');
    let field = |i: usize| {
        splitstring
            .get(i)
            .copied()
            .ok_or_else(|| format!("index out of range: no field {i} in {message:?}"))
    };
    match splitstring[0] {
        "Accept" => accept(&splitstring, remote, shared),
        "login" => {
            let user_item = format!("{},{}", field(1)?, field(2)?);
            shared.view().users.push(user_item);
        }
        "logout" => {
            let name = field(1)?;
            shared.view().users.retain(|item| item_name(item) != name);
        }
        "talk" => {
            // The seed loops over the open chat windows and only indexes the
            // fields inside the loop, so a short `talk` is harmless while no
            // window is open, and field 3 is read only for a matching window.
            let mut view = shared.view();
            let open = view.open_chats.clone();
            for title in &open {
                if title == field(2)? {
                    let info = (
                        field(2)?.to_string(),
                        field(1)?.to_string(),
                        field(3)?.to_string(),
                    );
                    view.received.push(info);
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// The `Accept` case: connect to the Accept datagram's *source address* on the
/// announced port, then start `GetUserList`. Failures here are caught by the
/// seed's inner `try` (a message box), so they never end the receive loop.
fn accept(splitstring: &[&str], remote: SocketAddr, shared: &Arc<Shared>) {
    let connected = (|| -> Result<TcpStream, String> {
        let port_text = splitstring
            .get(1)
            .ok_or("index out of range: no field 1 in Accept")?;
        let port = dotnet_int_parse(port_text)
            .ok_or_else(|| format!("int.Parse failed on {port_text:?}"))?;
        let port = u16::try_from(port).map_err(|_| format!("port {port} out of range"))?;
        let target = SocketAddr::new(remote.ip(), port);
        TcpStream::connect_timeout(&target, CONNECT_TIMEOUT)
            .map_err(|e| format!("connect to {target} failed: {e}"))
    })();
    match connected {
        Ok(stream) => {
            let spawned = {
                let shared = Arc::clone(shared);
                thread::Builder::new()
                    .name("seed-client-roster".into())
                    .spawn(move || get_user_list(stream, &shared))
            };
            match spawned {
                Ok(handle) => {
                    let mut helpers = lock(&shared.helpers);
                    helpers.retain(|h| !h.is_finished());
                    helpers.push(handle);
                }
                Err(e) => shared.add_log(format!("GetUserList thread failed to start: {e}")),
            }
        }
        // The seed shows the modal box "连接失败" (connect failed); its
        // `GetUserList` thread then fails at once on the missing reader.
        Err(e) => shared.add_log(format!("message box: connect failed ({e})")),
    }
}

/// Mirrors `GetUserList`: reads `BinaryReader` strings until one ends with
/// `end`, then adds every `;`-separated piece but the last to the list and
/// closes the connection. Any error ends the thread quietly.
fn get_user_list(mut stream: TcpStream, shared: &Shared) {
    if stream.set_read_timeout(Some(POLL_INTERVAL)).is_err() {
        return;
    }
    loop {
        let user_list = match read_dotnet_string(&mut stream, MAX_DOTNET_STRING, Some(&shared.stop))
        {
            Ok(text) => text,
            Err(e) => {
                shared.add_log(format!("GetUserList ended: {e}"));
                return;
            }
        };
        if user_list.ends_with("end") {
            let pieces = dotnet_split(&user_list, ';');
            let items = &pieces[..pieces.len() - 1];
            shared
                .view()
                .users
                .extend(items.iter().map(|item| item.to_string()));
            shared.add_log(format!("user list received: [{user_list}]"));
            return;
        }
    }
}
