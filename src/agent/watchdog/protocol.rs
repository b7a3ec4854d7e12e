//! The lines an agent sends its watchdog over the pipe, one order each (what each means: see
//! watchdog/mod.rs).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// One line of what an agent tells its watchdog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Order {
    Session {
        sid: i32,
        start_time: u64,
        what: String,
    },
    ForgetSession {
        sid: i32,
    },
    Path(PathBuf),
    ForgetPath(PathBuf),
    Pid {
        pid: i32,
        start_time: u64,
    },
    Record(PathBuf),
    Done,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("bad line {line:?} from the agent: {why}")]
    BadLine { line: String, why: &'static str },
    #[error("cannot watch {0:?}: a path with a line break cannot be sent to the watchdog")]
    LineBreak(PathBuf),
}

const SESSION: &str = "expected `session <sid above 1> <start time> <what>`";
const FORGET: &str = "expected `forget-session <sid above 1>`";
const PID: &str = "expected `pid <pid above 1> <start time>`";

impl Order {
    /// The line for this order, newline included.
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        let mut line = match self {
            Order::Session {
                sid,
                start_time,
                what,
            } => format!("session {sid} {start_time} {}", what.replace('\n', " ")).into_bytes(),
            Order::ForgetSession { sid } => format!("forget-session {sid}").into_bytes(),
            Order::Path(p) => path_line("path", p)?,
            Order::ForgetPath(p) => path_line("forget-path", p)?,
            Order::Pid { pid, start_time } => format!("pid {pid} {start_time}").into_bytes(),
            Order::Record(p) => path_line("record", p)?,
            Order::Done => b"done".to_vec(),
        };
        line.push(b'\n');
        Ok(line)
    }

    /// Parses one line (without its newline).
    pub fn parse(line: &[u8]) -> Result<Order, ProtocolError> {
        let line = Line::split(line);
        match line.word {
            b"session" => line.session(),
            b"forget-session" => line.forget_session(),
            b"pid" => line.pid_order(),
            b"path" => Ok(Order::Path(line.path()?)),
            b"forget-path" => Ok(Order::ForgetPath(line.path()?)),
            b"record" => Ok(Order::Record(line.path()?)),
            b"done" if line.rest.is_empty() => Ok(Order::Done),
            _ => Err(line.bad("unknown order")),
        }
    }
}

/// `<word> <path>`, refused for a path the line could not hold.
fn path_line(word: &str, p: &Path) -> Result<Vec<u8>, ProtocolError> {
    let bytes = p.as_os_str().as_bytes();
    if bytes.contains(&b'\n') || bytes.is_empty() {
        return Err(ProtocolError::LineBreak(p.to_path_buf()));
    }
    let mut line = format!("{word} ").into_bytes();
    line.extend_from_slice(bytes);
    Ok(line)
}

/// A line being parsed: its first word, and the rest after the first space.
struct Line<'a> {
    whole: &'a [u8],
    word: &'a [u8],
    rest: &'a [u8],
}

/// The numbers an order starts with, and the free text after them, if any.
struct Numbers<'a> {
    values: Vec<i64>,
    text: Option<&'a str>,
}

impl<'a> Line<'a> {
    fn split(whole: &'a [u8]) -> Line<'a> {
        match whole.iter().position(|b| *b == b' ') {
            Some(i) => Line {
                whole,
                word: &whole[..i],
                rest: &whole[i + 1..],
            },
            None => Line {
                whole,
                word: whole,
                rest: b"",
            },
        }
    }

    fn bad(&self, why: &'static str) -> ProtocolError {
        ProtocolError::BadLine {
            line: String::from_utf8_lossy(self.whole).into_owned(),
            why,
        }
    }

    fn session(&self) -> Result<Order, ProtocolError> {
        let n = self.numbers(2, SESSION)?;
        Ok(Order::Session {
            sid: self.pid(n.values[0], SESSION)?,
            start_time: self.start_time(n.values[1])?,
            what: n.text.unwrap_or_default().to_string(),
        })
    }

    fn forget_session(&self) -> Result<Order, ProtocolError> {
        match self.numbers(1, FORGET)? {
            Numbers { values, text: None } => Ok(Order::ForgetSession {
                sid: self.pid(values[0], FORGET)?,
            }),
            _ => Err(self.bad(FORGET)),
        }
    }

    fn pid_order(&self) -> Result<Order, ProtocolError> {
        match self.numbers(2, PID)? {
            Numbers { values, text: None } => Ok(Order::Pid {
                pid: self.pid(values[0], PID)?,
                start_time: self.start_time(values[1])?,
            }),
            _ => Err(self.bad(PID)),
        }
    }

    fn path(&self) -> Result<PathBuf, ProtocolError> {
        if self.rest.is_empty() {
            return Err(self.bad("the path is missing"));
        }
        Ok(PathBuf::from(OsStr::from_bytes(self.rest)))
    }

    /// The first `count` space-separated numbers of the rest; `why` if there are fewer.
    fn numbers(&self, count: usize, why: &'static str) -> Result<Numbers<'a>, ProtocolError> {
        let text = std::str::from_utf8(self.rest).map_err(|_| self.bad(why))?;
        let mut fields = text.splitn(count + 1, ' ');
        let mut values = Vec::with_capacity(count);
        for _ in 0..count {
            let n: i64 = fields
                .next()
                .and_then(|f| f.parse().ok())
                .ok_or(self.bad(why))?;
            values.push(n);
        }
        Ok(Numbers {
            values,
            text: fields.next(),
        })
    }

    /// A pid (or session id) above 1: kill(2) reads 0 or -1 as a whole group or every
    /// process, so those are never accepted.
    fn pid(&self, n: i64, why: &'static str) -> Result<i32, ProtocolError> {
        i32::try_from(n)
            .ok()
            .filter(|p| *p > 1)
            .ok_or(self.bad(why))
    }

    fn start_time(&self, n: i64) -> Result<u64, ProtocolError> {
        u64::try_from(n).map_err(|_| self.bad("bad start time"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(order: Order) {
        let line = order.encode().unwrap();
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(Order::parse(&line[..line.len() - 1]).unwrap(), order);
    }

    #[test]
    fn every_order_survives_the_pipe() {
        roundtrip(Order::Session {
            sid: 4242,
            start_time: 99,
            what: "ray start".into(),
        });
        roundtrip(Order::Session {
            sid: 7,
            start_time: 1,
            what: String::new(),
        });
        roundtrip(Order::ForgetSession { sid: 4242 });
        roundtrip(Order::Path("/tmp/rh-abc-1".into()));
        roundtrip(Order::Path("/tmp/with space/and\tTab".into()));
        roundtrip(Order::Path(PathBuf::from(OsStr::from_bytes(
            b"/tmp/\xff\xfe",
        ))));
        roundtrip(Order::ForgetPath("/tmp/rh-abc-1.token".into()));
        roundtrip(Order::Pid {
            pid: 31337,
            start_time: 123456789,
        });
        roundtrip(Order::Record("/home/u/.ray-hpc/clusters/c1".into()));
        roundtrip(Order::Done);
    }

    #[test]
    fn a_path_with_a_line_break_is_refused_not_split() {
        let p = PathBuf::from("/tmp/a\npath /etc");
        assert_eq!(
            Order::Path(p.clone()).encode(),
            Err(ProtocolError::LineBreak(p))
        );
        // A label is only words: its line breaks become spaces.
        let line = Order::Session {
            sid: 5,
            start_time: 6,
            what: "a\nb".into(),
        }
        .encode()
        .unwrap();
        assert_eq!(line, b"session 5 6 a b\n");
    }

    #[test]
    fn bad_lines_are_refused_with_what_was_expected() {
        for line in [
            &b"session"[..],
            b"session 12",
            b"session x 12 what",
            b"session 0 12",
            b"session 1 12",
            b"session -1 12",
            b"session 12 -5",
            b"forget-session",
            b"forget-session 12 13",
            b"pid 12",
            b"pid 12 13 14",
            b"pid 99999999999 1",
            b"path",
            b"path ",
            b"record",
            b"done now",
            b"",
            b"kill 1",
        ] {
            let err = Order::parse(line).unwrap_err();
            assert!(
                matches!(err, ProtocolError::BadLine { .. }),
                "{line:?}: {err}"
            );
        }
        let err = Order::parse(b"pid 1 5").unwrap_err().to_string();
        assert!(err.contains("pid <pid above 1> <start time>"), "{err}");
    }
}
