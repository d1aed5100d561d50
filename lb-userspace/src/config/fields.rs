//! Typed, located access to the parsed TOML tree.
//!
//! The config is parsed once with `toml_edit`, which keeps the byte span of every key and value.
//! [`Section`] (a table) and [`Field`] (one value in it) turn that tree into Rust values and
//! report anything that does not fit, a wrong type, an out-of-range number, an unknown key, at
//! the exact place it was written. Every getter reports its own problem and returns `None`, so
//! the schema code in `read.rs` can read all fields of an entry, collecting every error, and
//! only then decide whether the entry is complete.
//!
//! Why not serde with `toml::Spanned`: serde stops at the first error and reports unknown keys
//! without a usable span; users should see all their mistakes at once, each with a location.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use toml_edit::{ArrayOfTables, Item, Key, TableLike, Value};

use super::diagnostic::{Pos, Reporter};
use super::model::BackendAddress;

/// A table of the document: a `[header]` table, an `[[array]]` element, an inline `{ ... }`
/// table or one made of dotted keys (`health.interval = "2s"`).
#[derive(Clone, Copy)]
pub(super) struct Section<'a> {
    table: &'a dyn TableLike,
    /// How messages name this table, e.g. "[[vrrp]]" or "session".
    pub name: &'static str,
    /// Where the table starts, for "missing key" messages.
    pub at: Pos,
}

impl<'a> Section<'a> {
    pub fn new(table: &'a dyn TableLike, name: &'static str, at: Pos) -> Self {
        Section { table, name, at }
    }

    /// Reports every key not in `allowed`, at the key, listing what is allowed.
    pub fn reject_unknown_keys(&self, report: &mut Reporter, allowed: &[&str]) {
        for (key, item) in self.table.iter() {
            if allowed.contains(&key) {
                continue;
            }
            let at = key_pos(self.table.key(key)).unwrap_or_else(|| item_pos(item, self.at));
            report.error(
                at,
                format!(
                    "unknown key `{key}` in {} (expected one of: {})",
                    self.name,
                    allowed.join(", ")
                ),
            );
        }
    }

    /// Whether `key` is present, whatever its value.
    pub fn has(&self, key: &str) -> bool {
        self.table.contains_key(key)
    }

    /// Where `key` itself is written, if present.
    pub fn key_at(&self, key: &str) -> Option<Pos> {
        key_pos(self.table.key(key))
    }

    /// The value of `key`, if present.
    pub fn field(&self, key: &'static str) -> Option<Field<'a>> {
        let (key_entry, item) = self.table.get_key_value(key)?;
        let fallback = key_pos(Some(key_entry)).unwrap_or(self.at);
        Field::from_item(key, item, fallback)
    }

    /// The value of `key`; reports a missing key at the start of the table.
    pub fn required(&self, report: &mut Reporter, key: &'static str) -> Option<Field<'a>> {
        let field = self.field(key);
        if field.is_none() {
            report.error(self.at, format!("missing `{key}` in {}", self.name));
        }
        field
    }
}

/// One value of the document, with the key it belongs to and where it is written.
#[derive(Clone, Copy)]
pub(super) struct Field<'a> {
    /// The key this value belongs to (array elements carry their array's key).
    pub key: &'static str,
    /// Where the value is written: errors about the value point here.
    pub at: Pos,
    node: Node<'a>,
}

#[derive(Clone, Copy)]
enum Node<'a> {
    Value(&'a Value),
    Table(&'a dyn TableLike),
    ArrayOfTables(&'a ArrayOfTables),
}

impl<'a> Field<'a> {
    /// `fallback` locates values the parser kept no span for (implicit and dotted tables).
    fn from_item(key: &'static str, item: &'a Item, fallback: Pos) -> Option<Self> {
        let at = item_pos(item, fallback);
        let node = match item {
            Item::None => return None,
            Item::Value(value) => Node::Value(value),
            Item::Table(table) => Node::Table(table),
            Item::ArrayOfTables(array) => Node::ArrayOfTables(array),
        };
        Some(Field { key, at, node })
    }

    fn from_value(key: &'static str, value: &'a Value, fallback: Pos) -> Self {
        let at = value.span().map_or(fallback, |span| Pos(span.start));
        Field {
            key,
            at,
            node: Node::Value(value),
        }
    }

    /// How TOML calls the type of this value, for "found ..." in messages.
    pub fn type_name(&self) -> &'static str {
        match self.node {
            Node::Value(value) => value.type_name(),
            Node::Table(_) => "table",
            Node::ArrayOfTables(_) => "array of tables",
        }
    }

    fn value(&self) -> Option<&'a Value> {
        match self.node {
            Node::Value(value) => Some(value),
            Node::Table(_) | Node::ArrayOfTables(_) => None,
        }
    }

    /// Reports that the value is not of the `expected` kind ("a string", "an integer", ...).
    pub fn wrong_type(&self, report: &mut Reporter, expected: &str) {
        report.error(
            self.at,
            format!(
                "`{}` must be {expected}, found {}",
                self.key,
                self.type_name()
            ),
        );
    }

    pub fn str(&self, report: &mut Reporter) -> Option<&'a str> {
        let text = self.value().and_then(Value::as_str);
        if text.is_none() {
            self.wrong_type(report, "a string");
        }
        text
    }

    /// A string that must not be empty (names, scripts, ids).
    pub fn non_empty_str(&self, report: &mut Reporter) -> Option<&'a str> {
        let text = self.str(report)?;
        if text.trim().is_empty() {
            report.error(self.at, format!("`{}` must not be empty", self.key));
            return None;
        }
        Some(text)
    }

    pub fn bool(&self, report: &mut Reporter) -> Option<bool> {
        let flag = self.value().and_then(Value::as_bool);
        if flag.is_none() {
            self.wrong_type(report, "true or false");
        }
        flag
    }

    /// An integer in `min..=max`, converted to the model's type.
    pub fn int<T>(&self, report: &mut Reporter, min: T, max: T) -> Option<T>
    where
        T: Copy + Into<i64> + TryFrom<i64>,
    {
        let Some(number) = self.value().and_then(Value::as_integer) else {
            self.wrong_type(report, "an integer");
            return None;
        };
        let (min, max) = (min.into(), max.into());
        if !(min..=max).contains(&number) {
            // Type-sized upper bounds ("1 to 4294967295") say nothing a user needs.
            let allowed = if max >= i64::from(u32::MAX) {
                format!("{min} or more")
            } else {
                format!("{min} to {max}")
            };
            report.error(
                self.at,
                format!(
                    "{} = {number} is out of range (allowed: {allowed})",
                    self.key
                ),
            );
            return None;
        }
        // Cannot fail: the range was checked against bounds that came from `T`.
        T::try_from(number).ok()
    }

    /// A duration written as a string with a unit ("100ms", "2s", "1m"), parsed by humantime.
    pub fn duration(&self, report: &mut Reporter) -> Option<Duration> {
        let value = self.value();
        if let Some(text) = value.and_then(Value::as_str) {
            return match humantime::parse_duration(text) {
                Ok(duration) => Some(duration),
                Err(err) => {
                    report.error(
                        self.at,
                        format!(
                            "{} = {text:?} is not a duration ({err}); write e.g. \"2s\" or \"500ms\"",
                            self.key
                        ),
                    );
                    None
                }
            };
        }
        // A bare number has no unit, and guessing seconds or milliseconds would hide the mistake.
        let number = value.and_then(|v| match v {
            Value::Integer(n) => Some(n.value().to_string()),
            Value::Float(x) => Some(x.value().to_string()),
            _ => None,
        });
        match number {
            Some(number) => report.error(
                self.at,
                format!(
                    "{key} = {number} has no unit: durations are strings with a unit, e.g. \"2s\" \
                     or \"500ms\"; write {key} = \"{number}s\"",
                    key = self.key
                ),
            ),
            None => self.wrong_type(report, "a duration string such as \"2s\""),
        }
        None
    }

    /// A duration that must be greater than zero.
    pub fn positive_duration(&self, report: &mut Reporter) -> Option<Duration> {
        let duration = self.duration(report)?;
        if duration.is_zero() {
            report.error(
                self.at,
                format!("{} must be greater than 0, e.g. \"1s\"", self.key),
            );
            return None;
        }
        Some(duration)
    }

    /// One of `choices` (as written in the file), mapped to its value.
    pub fn choice<T: Copy>(&self, report: &mut Reporter, choices: &[(&str, T)]) -> Option<T> {
        let text = self.str(report)?;
        let found = choices.iter().find(|(name, _)| *name == text);
        if found.is_none() {
            let names: Vec<String> = choices
                .iter()
                .map(|(name, _)| format!("{name:?}"))
                .collect();
            report.error(
                self.at,
                format!(
                    "unknown {} {text:?} (expected one of: {})",
                    self.key,
                    names.join(", ")
                ),
            );
        }
        found.map(|&(_, value)| value)
    }

    /// An IP address without port, IPv4 or IPv6 ("198.18.0.99", "2001:2::99").
    pub fn ip(&self, report: &mut Reporter) -> Option<IpAddr> {
        let text = self.str(report)?;
        let address = text.parse::<IpAddr>().ok();
        if address.is_none() {
            report.error(
                self.at,
                format!(
                    "{} {text:?} is not an IP address; write e.g. \"198.18.0.99\" or \
                     \"2001:2::99\"",
                    self.key
                ),
            );
        }
        address
    }

    /// An IP address with a port other than 0: "198.18.0.99:80", or "[2001:2::99]:80" for
    /// IPv6 (the brackets are how URLs and every other tool write it).
    pub fn socket_addr(&self, report: &mut Reporter) -> Option<SocketAddr> {
        let text = self.str(report)?;
        let Ok(address) = text.parse::<SocketAddr>() else {
            let hint = match text.parse::<IpAddr>() {
                Ok(IpAddr::V4(_)) => format!("it has no port; write e.g. \"{text}:80\""),
                // "2001:2::1:80" reads as an address without a port, which is why IPv6 takes
                // brackets.
                Ok(IpAddr::V6(_)) => format!(
                    "it has no port (an IPv6 address with a port is written in brackets); \
                     write e.g. \"[{text}]:80\""
                ),
                Err(_) => "write an address and port, e.g. \"198.18.0.99:80\" or \
                           \"[2001:2::99]:80\""
                    .to_owned(),
            };
            report.error(
                self.at,
                format!(
                    "{} {text:?} is not an IP address with a port: {hint}",
                    self.key
                ),
            );
            return None;
        };
        if address.port() == 0 {
            report.error(
                self.at,
                format!("{} {text:?} has port 0; give the real port", self.key),
            );
            return None;
        }
        Some(address)
    }

    /// A backend's address: an IP address with a port ("198.18.0.102:80", "[2001:2::102]:80"),
    /// or a host name with a port ("http1.example.com:80") that is resolved when the node runs.
    pub fn backend_address(&self, report: &mut Reporter) -> Option<BackendAddress> {
        let text = self.str(report)?;
        if text.starts_with('[')
            || text.parse::<SocketAddr>().is_ok()
            || text.parse::<IpAddr>().is_ok()
        {
            return self.socket_addr(report).map(BackendAddress::Ip);
        }
        let named = text.rsplit_once(':').and_then(|(host, port)| {
            let port = port.parse::<u16>().ok().filter(|&port| port != 0)?;
            let valid = !host.is_empty()
                && host.len() <= 253
                && host.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                        && label
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                })
                && !host.chars().all(|c| c.is_ascii_digit() || c == '.');
            valid.then(|| BackendAddress::Name {
                host: host.to_ascii_lowercase(),
                port,
            })
        });
        if named.is_none() {
            report.error(
                self.at,
                format!(
                    "{} {text:?} is not an address with a port: write an IP address or a host name \
                     with the port, e.g. \"198.18.0.102:80\", \"[2001:2::102]:80\" or \
                     \"http1.example.com:80\"",
                    self.key
                ),
            );
        }
        named
    }

    /// The value as a table (`[header]`, `{ inline }` or dotted keys) that messages call `name`.
    pub fn section(&self, report: &mut Reporter, name: &'static str) -> Option<Section<'a>> {
        let table: Option<&'a dyn TableLike> = match self.node {
            Node::Table(table) => Some(table),
            Node::Value(Value::InlineTable(table)) => Some(table),
            Node::Value(_) | Node::ArrayOfTables(_) => None,
        };
        if table.is_none() {
            self.wrong_type(report, "a table");
        }
        table.map(|table| Section::new(table, name, self.at))
    }

    /// The elements of an array (`[a, b]`) or of an array of tables (`[[key]]` repeated).
    pub fn list(&self, report: &mut Reporter) -> Option<Vec<Field<'a>>> {
        match self.node {
            Node::Value(Value::Array(array)) => Some(
                array
                    .iter()
                    .map(|value| Field::from_value(self.key, value, self.at))
                    .collect(),
            ),
            Node::ArrayOfTables(array) => Some(
                array
                    .iter()
                    .map(|table| Field {
                        key: self.key,
                        at: table.span().map_or(self.at, |span| Pos(span.start)),
                        node: Node::Table(table),
                    })
                    .collect(),
            ),
            Node::Value(_) | Node::Table(_) => {
                self.wrong_type(report, "an array");
                None
            }
        }
    }

    /// Whether the value is one table (`[header]`, `{ inline }` or dotted keys).
    pub fn is_table(&self) -> bool {
        matches!(
            self.node,
            Node::Table(_) | Node::Value(Value::InlineTable(_))
        )
    }

    pub fn is_str(&self) -> bool {
        matches!(self.node, Node::Value(Value::String(_)))
    }
}

fn key_pos(key: Option<&Key>) -> Option<Pos> {
    key.and_then(Key::span).map(|span| Pos(span.start))
}

fn item_pos(item: &Item, fallback: Pos) -> Pos {
    item.span().map_or(fallback, |span| Pos(span.start))
}
