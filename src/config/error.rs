//! What went wrong with a configuration file: every problem, each with its position.

use std::fmt;
use std::ops::Range;

/// A 1-based position in a configuration file. `col` counts characters, not bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Location {
    pub line: usize,
    pub col: usize,
}

impl Location {
    /// The line and column of byte `offset` in `src` (clamped to the text; never panics).
    pub fn of_offset(src: &str, offset: usize) -> Location {
        let mut offset = offset.min(src.len());
        while !src.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &src[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Location {
            line: before.matches('\n').count() + 1,
            col: before[line_start..].chars().count() + 1,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// The kind of a [`ConfigProblem`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// The file could not be read (missing, unreadable, not UTF-8).
    Read,
    /// The text is not valid TOML.
    Syntax,
    /// A key that is not in the schema.
    UnknownKey,
    /// A required key that is absent (`name` and `cpus` of a `[[node_types]]` entry).
    MissingKey,
    /// A value of the wrong TOML type (a string where a number belongs, ...).
    WrongType,
    /// A value of the right type that breaks a rule (range, choices, format).
    BadValue,
    /// The effective configuration could not be written back as TOML.
    Render,
}

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub kind: ProblemKind,
    /// The dotted key the problem is about (`ray.bin`), when there is one.
    pub key: Option<String>,
    /// Where in the file (1-based), when known.
    pub location: Option<Location>,
    /// Byte range in the file, when known.
    pub span: Option<Range<usize>>,
    /// What is wrong, without the file name or position.
    pub message: String,
}

impl ConfigProblem {
    pub(crate) fn at(
        src: &str,
        kind: ProblemKind,
        key: Option<String>,
        span: Option<Range<usize>>,
        message: String,
    ) -> ConfigProblem {
        ConfigProblem {
            kind,
            key,
            location: span.as_ref().map(|s| Location::of_offset(src, s.start)),
            span,
            message,
        }
    }

    pub(crate) fn unplaced(kind: ProblemKind, message: String) -> ConfigProblem {
        ConfigProblem {
            kind,
            key: None,
            location: None,
            span: None,
            message,
        }
    }
}

/// Everything wrong with one configuration file (never empty). `Display` writes one line per
/// problem: `<origin>:<line>:<col>: <message>`, or `<origin>: <message>` without a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file name (or other origin) the problems belong to.
    pub origin: String,
    /// Every problem found, in file order.
    pub problems: Vec<ConfigProblem>,
}

impl ConfigError {
    pub(crate) fn new(origin: &str, mut problems: Vec<ConfigProblem>) -> ConfigError {
        // File order; problems without a position (read errors) first.
        problems.sort_by_key(|p| p.span.as_ref().map(|s| s.start));
        problems.dedup();
        ConfigError {
            origin: origin.to_string(),
            problems,
        }
    }

    pub(crate) fn single(origin: &str, kind: ProblemKind, message: String) -> ConfigError {
        ConfigError::new(origin, vec![ConfigProblem::unplaced(kind, message)])
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match p.location {
                Some(loc) => write!(f, "{}:{}: {}", self.origin, loc, p.message)?,
                None => write!(f, "{}: {}", self.origin, p.message)?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}
