//! The seed's server, reproduced on purpose, defects included (see the
//! [module docs](super)).
//!
//! It mirrors `btnStart_Click`, `ReceiveMessage`, `SendtoClient`,
//! `ListenClientConnect` and `SendData` from section 3 of the seed. Differences
//! that exist only to make it usable in tests:
//!
//! - both sockets bind port 0 (the seed uses a port typed by the user and a
//!   random TCP port);
//! - the blocking calls wake up every few milliseconds to look at a stop flag,
//!   so [`SeedServer::stop`] (or dropping it) ends every thread;
//! - the user list sits behind a mutex (the seed shares a `List<User>` between
//!   threads without a lock; its data races are not reproduced);
//! - the list-box lines are in English, one per event, in the seed's order.

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::{
    dotnet_endpoint_string, dotnet_split, is_timeout, parse_seed_endpoint, receive_loop,
    send_anonymous, write_dotnet_string, POLL_INTERVAL,
};

/// How long a roster write may block before the connection is given up.
const ROSTER_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the wait helpers look at the state.
const WAIT_POLL: Duration = Duration::from_millis(5);

/// The seed's `User` class: a name and the endpoint the user claimed.
#[derive(Clone, Debug)]
struct User {
    name: String,
    endpoint: SocketAddr,
}

/// State shared by the server's threads.
#[derive(Default)]
struct Shared {
    /// The seed's `userList`.
    users: Mutex<Vec<User>>,
    /// The seed's list box.
    log: Mutex<Vec<String>>,
    /// False once `ReceiveMessage` has left its loop.
    receiving: AtomicBool,
    /// Set by [`SeedServer::stop`].
    stop: AtomicBool,
    /// The `SendData` threads, joined on stop.
    senders: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn add_log(&self, line: String) {
        lock(&self.log).push(line);
    }
}

/// Locks a mutex, ignoring poisoning (a panicking test thread must not make
/// every later call panic too).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running seed server: a UDP receive loop and a TCP roster listener.
pub struct SeedServer {
    udp_addr: SocketAddr,
    tcp_port: u16,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl SeedServer {
    /// Mirrors `btnStart_Click`: binds the UDP receive socket on `(ip, 0)`,
    /// starts the receive thread, binds the TCP listener on `(ip, 0)` and
    /// starts the accept thread.
    pub fn start(ip: IpAddr) -> io::Result<SeedServer> {
        let udp = UdpSocket::bind((ip, 0))?;
        udp.set_read_timeout(Some(POLL_INTERVAL))?;
        let udp_addr = udp.local_addr()?;

        let listener = TcpListener::bind((ip, 0))?;
        listener.set_nonblocking(true)?;
        let tcp_port = listener.local_addr()?.port();

        let shared = Arc::new(Shared::default());
        shared.receiving.store(true, Ordering::SeqCst);

        let receive = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("seed-server-udp".into())
                .spawn(move || receive_message(&udp, udp_addr, tcp_port, &shared))?
        };
        let listen = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("seed-server-tcp".into())
                .spawn(move || listen_client_connect(&listener, ip, tcp_port, &shared))
        };
        let listen = match listen {
            Ok(handle) => handle,
            Err(e) => {
                shared.stop.store(true, Ordering::SeqCst);
                let _ = receive.join();
                return Err(e);
            }
        };
        shared.add_log(format!(
            "server thread {} started, listening on port {tcp_port}",
            dotnet_endpoint_string(udp_addr)
        ));
        Ok(SeedServer {
            udp_addr,
            tcp_port,
            shared,
            threads: vec![receive, listen],
        })
    }

    /// The address of the UDP receive socket (where clients send `login`).
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }

    /// The TCP port announced in `Accept,<port>`.
    pub fn tcp_port(&self) -> u16 {
        self.tcp_port
    }

    /// The user list, in order, as `(name, endpoint text)`; duplicates are
    /// kept, as in the seed.
    pub fn users(&self) -> Vec<(String, String)> {
        lock(&self.shared.users)
            .iter()
            .map(|u| (u.name.clone(), dotnet_endpoint_string(u.endpoint)))
            .collect()
    }

    /// The list-box lines so far.
    pub fn log(&self) -> Vec<String> {
        lock(&self.shared.log).clone()
    }

    /// False once the receive loop has ended (after any exception in the
    /// seed's `ReceiveMessage`, or after [`SeedServer::stop`]).
    pub fn is_receiving(&self) -> bool {
        self.shared.receiving.load(Ordering::SeqCst)
    }

    /// Polls every few milliseconds until `pred` holds for the server, or
    /// `timeout` passes. Returns whether it held.
    pub fn wait_until(&self, timeout: Duration, pred: impl Fn(&SeedServer) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(WAIT_POLL);
        }
    }

    /// Waits until `pred` holds for the user list (see [`SeedServer::users`]).
    pub fn wait_for_users(
        &self,
        timeout: Duration,
        pred: impl Fn(&[(String, String)]) -> bool,
    ) -> bool {
        self.wait_until(timeout, |server| pred(&server.users()))
    }

    /// Waits until `pred` holds for the list-box lines.
    pub fn wait_for_log(&self, timeout: Duration, pred: impl Fn(&[String]) -> bool) -> bool {
        self.wait_until(timeout, |server| pred(&lock(&server.shared.log)))
    }

    /// Waits until the receive loop has ended.
    pub fn wait_for_loop_end(&self, timeout: Duration) -> bool {
        self.wait_until(timeout, |server| !server.is_receiving())
    }

    /// Stops every thread and waits for them (what dropping the server does).
    pub fn stop(self) {}

    fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
        let senders: Vec<_> = lock(&self.shared.senders).drain(..).collect();
        for handle in senders {
            let _ = handle.join();
        }
    }
}

impl Drop for SeedServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl std::fmt::Debug for SeedServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeedServer")
            .field("udp_addr", &self.udp_addr)
            .field("tcp_port", &self.tcp_port)
            .field("receiving", &self.is_receiving())
            .finish_non_exhaustive()
    }
}

/// Mirrors the server's `ReceiveMessage`: every datagram is logged, split on
/// `,`, and field 2 is parsed as `ip:port` *before* the verb is looked at. Any
/// failure (a missing field, a bad endpoint, a failed send, a socket error)
/// leaves the loop, as the seed's `catch { break; }` does.
fn receive_message(udp: &UdpSocket, udp_addr: SocketAddr, tcp_port: u16, shared: &Shared) {
    let reason = receive_loop(udp, &shared.stop, |message, remote| {
        shared.add_log(format!("{}:{message}", dotnet_endpoint_string(remote)));
        handle_message(message, tcp_port, shared)
    });
    shared.add_log(format!(
        "service thread {} ended ({reason})",
        dotnet_endpoint_string(udp_addr)
    ));
    shared.receiving.store(false, Ordering::SeqCst);
}

/// The body of the seed's `try` block for one message. An `Err` is the
/// exception that ends the loop.
fn handle_message(message: &str, tcp_port: u16, shared: &Shared) -> Result<(), String> {
    let splitstring = dotnet_split(message, ',');
    let endpoint_text = splitstring
        .get(2)
        .ok_or_else(|| format!("index out of range: no field 2 in {message:?}"))?;
    let client_endpoint = parse_seed_endpoint(endpoint_text)?;
    match splitstring[0] {
        "login" => {
            let user = User {
                name: splitstring[1].to_string(),
                endpoint: client_endpoint,
            };
            // No duplicate check, as in the seed.
            lock(&shared.users).push(user.clone());
            let shown = dotnet_endpoint_string(user.endpoint);
            shared.add_log(format!("user {}({shown}) joined", user.name));
            let send_string = format!("Accept,{tcp_port}");
            send_to_client(&user, &send_string)?;
            shared.add_log(format!("sent to {}({shown}): [{send_string}]", user.name));
            // The seed indexes the live list; a snapshot is the same here
            // because only this thread changes it.
            let users = lock(&shared.users).clone();
            for other in users.iter().filter(|u| u.name != user.name) {
                send_to_client(other, message)?;
            }
            shared.add_log(format!("broadcast: [{message}]"));
        }
        "logout" => {
            let remaining = {
                let mut users = lock(&shared.users);
                // The seed's loop: `RemoveAt(i)` then `i++`, so the element
                // right after a removed one is skipped. Two adjacent users with
                // the same name lose only the first; reproduced on purpose.
                let mut i = 0;
                while i < users.len() {
                    if users[i].name == splitstring[1] {
                        shared.add_log(format!(
                            "user {}({}) left",
                            users[i].name,
                            dotnet_endpoint_string(users[i].endpoint)
                        ));
                        users.remove(i);
                    }
                    i += 1;
                }
                users.clone()
            };
            for user in &remaining {
                send_to_client(user, message)?;
            }
            shared.add_log(format!("broadcast: [{message}]"));
        }
        _ => {}
    }
    Ok(())
}

/// Mirrors `SendtoClient`: a new anonymous socket per datagram. A failure is
/// an exception in the receive loop, so it ends it.
fn send_to_client(user: &User, message: &str) -> Result<(), String> {
    send_anonymous(message, user.endpoint).map_err(|e| {
        format!(
            "send to {}({}) failed: {e}",
            user.name,
            dotnet_endpoint_string(user.endpoint)
        )
    })
}

/// Mirrors `ListenClientConnect`: accepts connections and starts one
/// `SendData` thread for each. An accept error ends the loop.
fn listen_client_connect(listener: &TcpListener, ip: IpAddr, tcp_port: u16, shared: &Arc<Shared>) {
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let (stream, remote) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {
                thread::sleep(POLL_INTERVAL / 4);
                continue;
            }
            Err(_) => break,
        };
        shared.add_log(format!(
            "accepted TCP request from {}",
            dotnet_endpoint_string(remote)
        ));
        let sender = {
            let shared = Arc::clone(shared);
            thread::Builder::new()
                .name("seed-server-send".into())
                .spawn(move || send_data(stream, remote, &shared))
        };
        match sender {
            Ok(handle) => {
                let mut senders = lock(&shared.senders);
                senders.retain(|h| !h.is_finished());
                senders.push(handle);
            }
            Err(_) => break,
        }
    }
    shared.add_log(format!("listening thread ({ip}:{tcp_port}) ended"));
}

/// Mirrors `SendData`: the roster `name,ip:port;...;end` as one
/// `BinaryWriter` string, flushed, then the connection is closed. Errors end
/// only this thread (in the seed they would be unhandled).
fn send_data(stream: TcpStream, remote: SocketAddr, shared: &Shared) {
    let mut roster = String::new();
    for user in lock(&shared.users).iter() {
        roster.push_str(&user.name);
        roster.push(',');
        roster.push_str(&dotnet_endpoint_string(user.endpoint));
        roster.push(';');
    }
    roster.push_str("end");
    let result = (|| -> io::Result<()> {
        // Accepted sockets may inherit the listener's non-blocking mode.
        stream.set_nonblocking(false)?;
        stream.set_write_timeout(Some(ROSTER_WRITE_TIMEOUT))?;
        let mut writer = &stream;
        write_dotnet_string(&mut writer, &roster)?;
        writer.flush()
    })();
    match result {
        Ok(()) => shared.add_log(format!(
            "sent to {} [{roster}]",
            dotnet_endpoint_string(remote)
        )),
        Err(e) => shared.add_log(format!(
            "sending the roster to {} failed: {e}",
            dotnet_endpoint_string(remote)
        )),
    }
    drop(stream);
}
