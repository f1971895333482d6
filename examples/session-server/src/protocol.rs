//! The line protocol and the session state, pure: parsing, formatting, encoding. No I/O.
//!
//! One request per line, one reply line per request (UTF-8, `\n`-terminated, at most
//! [`LINE_BYTES_MAX`] bytes):
//!
//! | request            | reply                      | meaning                                    |
//! |--------------------|----------------------------|--------------------------------------------|
//! | (on connect)       | `READY <component>`        | the active instance that serves you        |
//! | `HELLO <session>`  | `OK <count> <seq>`         | attach to (or start) a session             |
//! | `INCR [<seq>]`     | `OK <count> <seq>`         | count up once; `<seq>` makes it idempotent |
//! | `GET`              | `OK <count> <seq>`         | the session's state                        |
//! | `QUIT`             | `BYE`                      | the server closes the connection           |
//! | anything wrong     | `ERR <reason>`             | the connection stays open                  |
//! | service lost       | `ERR unavailable: <reason>` | closed: reconnect (to another address)    |
//!
//! `<seq>` numbers a session's increments: `INCR n` with `n = seq + 1` counts, `INCR n` with
//! `n = seq` (a retry of the last one, whose reply was lost in a failover) answers the current
//! state without counting again, anything else is refused. `INCR` without a number always
//! counts (handy by hand with `nc`). So a client that retries with the same number after a
//! failover counts exactly once.

use std::fmt;

/// Longest request or reply line, in bytes (without the newline).
pub const LINE_BYTES_MAX: usize = 256;
/// Longest session id, in bytes.
pub const SESSION_ID_BYTES_MAX: usize = 64;
/// The prefix of an `ERR` reply after which the server closes the connection: the client
/// should reconnect, possibly to another address.
pub const UNAVAILABLE: &str = "unavailable:";

/// A request line, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `HELLO <session>`: attach to a session (created empty on first use).
    Hello(String),
    /// `INCR [<seq>]`: count up once.
    Incr(Option<u64>),
    /// `GET`: the session's state.
    Get,
    /// `QUIT`: close.
    Quit,
}

impl Request {
    /// Parse one line (without its newline).
    ///
    /// # Errors
    /// A reason to send back in an `ERR` reply.
    pub fn parse(line: &str) -> Result<Request, String> {
        let mut words = line.split_ascii_whitespace();
        let verb = words.next().unwrap_or_default().to_ascii_uppercase();
        let arg = words.next();
        if words.next().is_some() {
            return Err(format!("too many words in '{line}'"));
        }
        match (verb.as_str(), arg) {
            ("HELLO", Some(id)) => {
                check_session_id(id)?;
                Ok(Request::Hello(id.to_string()))
            }
            ("HELLO", None) => Err("HELLO needs a session id: HELLO <session-id>".into()),
            ("INCR", None) => Ok(Request::Incr(None)),
            ("INCR", Some(n)) => n
                .parse()
                .map(|n| Request::Incr(Some(n)))
                .map_err(|_| format!("INCR takes a sequence number, not '{n}'")),
            ("GET", None) => Ok(Request::Get),
            ("QUIT", None) => Ok(Request::Quit),
            ("GET" | "QUIT", Some(_)) => Err(format!("{verb} takes no argument")),
            ("", _) => Err("empty line; send HELLO <session-id>, INCR, GET or QUIT".into()),
            _ => Err(format!(
                "unknown request '{verb}'; send HELLO <session-id>, INCR [<seq>], GET or QUIT"
            )),
        }
    }
}

/// Refuse a session id that is empty, too long, or not made of `A-Z a-z 0-9 - _ .`.
///
/// # Errors
/// What is wrong with it.
pub fn check_session_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > SESSION_ID_BYTES_MAX {
        return Err(format!(
            "a session id has 1 to {SESSION_ID_BYTES_MAX} bytes, '{id}' has {}",
            id.len()
        ));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(format!(
            "session id '{id}' has characters other than A-Z a-z 0-9 - _ ."
        ));
    }
    Ok(())
}

/// One session's state, as its checkpoint section holds it (`"<count> <seq>"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionState {
    /// The counter.
    pub count: u64,
    /// The sequence number of the last increment.
    pub seq: u64,
}

impl SessionState {
    /// The section's bytes.
    pub fn encode(self) -> Vec<u8> {
        format!("{} {}", self.count, self.seq).into_bytes()
    }

    /// From a section's bytes.
    ///
    /// # Errors
    /// The bytes are not `"<count> <seq>"` (a section written by something else).
    pub fn decode(bytes: &[u8]) -> Result<SessionState, String> {
        let text = String::from_utf8_lossy(bytes);
        let mut it = text.split(' ').map(str::parse::<u64>);
        match (it.next(), it.next(), it.next()) {
            (Some(Ok(count)), Some(Ok(seq)), None) => Ok(SessionState { count, seq }),
            _ => Err(format!(
                "the checkpoint holds '{text}', not '<count> <seq>'"
            )),
        }
    }

    /// The state after `INCR seq`, and whether it changed (false: a retry of the last one).
    ///
    /// # Errors
    /// A sequence number that is neither the next one nor a retry of the last one.
    pub fn incr(self, seq: Option<u64>) -> Result<(SessionState, bool), String> {
        let next = self
            .seq
            .checked_add(1)
            .ok_or("the sequence number overflowed")?;
        match seq {
            Some(s) if s == self.seq && s > 0 => Ok((self, false)),
            Some(s) if s != next => Err(format!(
                "sequence number {s} is out of order: the session's last one is {}; send {next} \
                 (or {} to repeat the last)",
                self.seq, self.seq
            )),
            _ => Ok((
                SessionState {
                    count: self.count.checked_add(1).ok_or("the count overflowed")?,
                    seq: next,
                },
                true,
            )),
        }
    }
}

impl fmt::Display for SessionState {
    /// The `OK` reply (without the newline).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OK {} {}", self.count, self.seq)
    }
}

/// A reply line, parsed (the client's side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `READY <component>`.
    Ready(String),
    /// `OK <count> <seq>`.
    Ok(SessionState),
    /// `ERR unavailable: ...`: reconnect.
    Unavailable(String),
    /// `ERR ...`: the request was wrong.
    Err(String),
    /// `BYE`.
    Bye,
}

impl Reply {
    /// Parse one reply line (without its newline).
    ///
    /// # Errors
    /// The line is not a reply of this protocol.
    pub fn parse(line: &str) -> Result<Reply, String> {
        let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
        match verb {
            "READY" => Ok(Reply::Ready(rest.to_string())),
            "OK" => SessionState::decode(rest.as_bytes()).map(Reply::Ok),
            "ERR" => match rest.strip_prefix(UNAVAILABLE) {
                Some(why) => Ok(Reply::Unavailable(why.trim().to_string())),
                None => Ok(Reply::Err(rest.to_string())),
            },
            "BYE" => Ok(Reply::Bye),
            _ => Err(format!("'{line}' is not a session-server reply")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse() {
        assert_eq!(Request::parse("HELLO s1"), Ok(Request::Hello("s1".into())));
        assert_eq!(Request::parse("incr"), Ok(Request::Incr(None)));
        assert_eq!(Request::parse("INCR 7"), Ok(Request::Incr(Some(7))));
        assert_eq!(Request::parse(" GET "), Ok(Request::Get));
        assert_eq!(Request::parse("QUIT"), Ok(Request::Quit));
        for bad in [
            "",
            "HELLO",
            "HELLO a b",
            "HELLO a/b",
            "INCR x",
            "GET 1",
            "PUT",
        ] {
            assert!(Request::parse(bad).is_err(), "{bad:?} must be refused");
        }
        let long = format!("HELLO {}", "a".repeat(SESSION_ID_BYTES_MAX + 1));
        assert!(Request::parse(&long).is_err());
    }

    #[test]
    fn increments_count_once_per_sequence_number() {
        let s = SessionState::default();
        let (s1, changed) = s.incr(Some(1)).expect("first");
        assert!(changed);
        assert_eq!(s1, SessionState { count: 1, seq: 1 });
        let (again, changed) = s1.incr(Some(1)).expect("a retry");
        assert!(
            !changed,
            "a retry of the last increment does not count again"
        );
        assert_eq!(again, s1);
        assert!(s1.incr(Some(3)).is_err(), "a gap is refused");
        assert!(s.incr(Some(0)).is_err(), "0 is never a valid increment");
        let (s2, _) = s1.incr(None).expect("unnumbered");
        assert_eq!(s2, SessionState { count: 2, seq: 2 });
    }

    #[test]
    fn state_and_replies_round_trip() {
        let s = SessionState { count: 5, seq: 9 };
        assert_eq!(SessionState::decode(&s.encode()), Ok(s));
        assert!(SessionState::decode(b"5").is_err());
        assert!(SessionState::decode(b"5 9 1").is_err());
        assert_eq!(Reply::parse(&s.to_string()), Ok(Reply::Ok(s)));
        assert_eq!(Reply::parse("READY a-1"), Ok(Reply::Ready("a-1".into())));
        assert_eq!(
            Reply::parse("ERR unavailable: not active"),
            Ok(Reply::Unavailable("not active".into()))
        );
        assert_eq!(Reply::parse("ERR nope"), Ok(Reply::Err("nope".into())));
        assert_eq!(Reply::parse("BYE"), Ok(Reply::Bye));
        assert!(Reply::parse("HELLO").is_err());
    }
}
