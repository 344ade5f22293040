//! One host's config, written as the TOML text of a per-host file from the
//! pieces of the cluster file, with a map from every piece of the text
//! back to where it came from, so that a mistake found in the derived
//! config is reported at the cluster file's own line and column.
//!
//! Values are copied as the cluster file spells them (strings, numbers,
//! arrays, inline tables, with their comments inside); keys are written
//! bare or quoted; tables are written as `[section]` headers. Tables that
//! both the defaults and the host give are merged key by key, the host's
//! value winning; any other value of the host replaces the default whole.

use std::fmt::Write as _;
use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// The text of a derived config and where each part of it came from.
#[derive(Debug, Clone, Default)]
pub struct Rendered {
    pub text: String,
    /// The pieces of the text, in order: `(start in text, length, start in
    /// the cluster file, copied)`. A copied piece is the cluster file's
    /// bytes; any other (a header, a key, ` = `) points at one place.
    map: Vec<Piece>,
}

#[derive(Debug, Clone, Copy)]
struct Piece {
    at: usize,
    len: usize,
    src: usize,
    copied: bool,
}

impl Rendered {
    /// The offset in the cluster file that byte `at` of the text came from:
    /// inside a copied piece, the same byte there; inside text the
    /// renderer wrote, the place it stands for; past the end, the place
    /// of the last piece.
    pub fn source(&self, at: usize) -> usize {
        let i = self.map.partition_point(|p| p.at <= at);
        match i.checked_sub(1).map(|i| self.map[i]) {
            Some(p) if p.copied && at < p.at + p.len => p.src + (at - p.at),
            Some(p) => p.src,
            None => self.map.first().map_or(0, |p| p.src),
        }
    }

    /// The span in the cluster file of `span` in the text.
    pub fn source_span(&self, span: Range<usize>) -> Range<usize> {
        let start = self.source(span.start);
        start..start + span.len().max(1)
    }

    /// Appends a comment line, pointing back at `src`.
    pub fn comment(&mut self, line: &str, src: usize) {
        self.put(&format!("# {line}\n"), src);
    }

    /// Appends text the renderer wrote, standing for the place `src`.
    fn put(&mut self, text: &str, src: usize) {
        self.push(text, src, false);
    }

    fn push(&mut self, text: &str, src: usize, copied: bool) {
        self.map.push(Piece {
            at: self.text.len(),
            len: text.len(),
            src,
            copied,
        });
        self.text.push_str(text);
    }

    /// Appends a piece of the cluster file, byte for byte.
    fn copy(&mut self, source: &str, span: Range<usize>) {
        let piece = source.get(span.clone()).unwrap_or_default();
        self.push(piece, span.start, true);
    }
}

type Key<'i> = Spanned<toml::de::DeString<'i>>;
type Value<'i> = Spanned<DeValue<'i>>;

/// A table as it will be written: its keys with what each holds.
#[derive(Debug)]
pub struct Table<'t, 'i> {
    /// Where the table was opened (its key, or its header).
    at: usize,
    entries: Vec<(&'t Key<'i>, Node<'t, 'i>)>,
}

#[derive(Debug)]
enum Node<'t, 'i> {
    /// Copied as spelled: a scalar, an array, an inline table.
    Value(&'t Value<'i>),
    /// A `[header]` table, or one the merge opened.
    Table(Table<'t, 'i>),
    /// An array of tables written `[[header]]`.
    Tables(Vec<Table<'t, 'i>>),
}

/// Whether `value` was written inline (`{ ... }`) in `source`.
fn inline(source: &str, value: &Value<'_>) -> bool {
    source
        .get(value.span())
        .is_some_and(|s| s.trim_start().starts_with('{'))
}

impl<'t, 'i> Table<'t, 'i> {
    /// The table `table`, opened at `at`, as written in `source`.
    pub fn of(source: &str, at: usize, table: &'t DeTable<'i>) -> Self {
        let mut entries: Vec<_> = table
            .iter()
            .map(|(k, v)| (k, Node::of(source, v)))
            .collect();
        // In the order the file has them (the parsed table is sorted).
        entries.sort_by_key(|(k, _)| k.span().start);
        Table { at, entries }
    }

    /// An empty table opened at `at`.
    pub fn empty(at: usize) -> Self {
        Table {
            at,
            entries: Vec::new(),
        }
    }

    /// Merges `over` into this table: a key both give as tables is merged
    /// the same way; any other value of `over` replaces this one's, where
    /// it stood; new keys come after.
    pub fn merge(&mut self, source: &str, over: &'t DeTable<'i>) {
        for (key, value) in over {
            let slot = self
                .entries
                .iter_mut()
                .find(|(k, _)| k.get_ref() == key.get_ref());
            let Some(slot) = slot else {
                self.entries.push((key, Node::of(source, value)));
                continue;
            };
            match (slot.1.as_table(source), value.get_ref()) {
                (Some(mine), DeValue::Table(t)) => mine.merge(source, t),
                _ => *slot = (key, Node::of(source, value)),
            }
        }
    }

    /// Writes the table under `path` (`[path]`, or `[[path]]` when
    /// `array`), then its sub-tables.
    pub fn write(&self, source: &str, path: &str, array: bool, out: &mut Rendered) {
        let header = if array {
            format!("\n[[{path}]]\n")
        } else {
            format!("\n[{path}]\n")
        };
        out.put(&header, self.at);
        for (key, node) in &self.entries {
            if let Node::Value(v) = node {
                write_key(key, out);
                out.put(" = ", v.span().start);
                out.copy(source, v.span());
                out.put("\n", v.span().end);
            }
        }
        for (key, node) in &self.entries {
            let sub = format!("{path}.{}", key_text(key.get_ref()));
            match node {
                Node::Table(t) => t.write(source, &sub, false, out),
                Node::Tables(items) => {
                    for t in items {
                        t.write(source, &sub, true, out);
                    }
                }
                Node::Value(_) => {}
            }
        }
    }
}

impl<'t, 'i> Node<'t, 'i> {
    fn of(source: &str, value: &'t Value<'i>) -> Self {
        match value.get_ref() {
            DeValue::Table(t) if !inline(source, value) => {
                Node::Table(Table::of(source, value.span().start, t))
            }
            DeValue::Array(items)
                if !items.is_empty()
                    && items
                        .iter()
                        .all(|i| i.get_ref().is_table() && !inline(source, i)) =>
            {
                Node::Tables(
                    items
                        .iter()
                        .filter_map(|i| {
                            i.get_ref()
                                .as_table()
                                .map(|t| Table::of(source, i.span().start, t))
                        })
                        .collect(),
                )
            }
            _ => Node::Value(value),
        }
    }

    /// This node as a table that can take more keys: an inline table is
    /// opened up into one.
    fn as_table(&mut self, source: &str) -> Option<&mut Table<'t, 'i>> {
        if let Node::Value(v) = self {
            let v: &'t Value<'i> = v;
            match v.get_ref() {
                DeValue::Table(t) => *self = Node::Table(Table::of(source, v.span().start, t)),
                _ => return None,
            }
        }
        match self {
            Node::Table(t) => Some(t),
            _ => None,
        }
    }
}

fn write_key(key: &Key<'_>, out: &mut Rendered) {
    out.put(&key_text(key.get_ref()), key.span().start);
}

/// A key as TOML writes it: bare when it can be, else quoted.
fn key_text(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        key.to_string()
    } else {
        let mut quoted = String::from("\"");
        for c in key.chars() {
            match c {
                '"' => quoted.push_str("\\\""),
                '\\' => quoted.push_str("\\\\"),
                c if c.is_control() => {
                    let _ = write!(quoted, "\\u{:04X}", u32::from(c));
                }
                c => quoted.push(c),
            }
        }
        quoted.push('"');
        quoted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> DeTable<'_> {
        let (root, errors) = DeTable::parse_recoverable(text);
        assert!(errors.is_empty(), "{errors:?}");
        root.into_inner()
    }

    fn table<'a, 't>(root: &'t DeTable<'a>, key: &str) -> &'t DeTable<'a> {
        root.get(key).unwrap().get_ref().as_table().unwrap()
    }

    #[test]
    fn tables_merge_key_by_key_and_the_host_wins() {
        let text = "[d]\nsmt = \"off\"\nenv = { A = \"1\", B = \"2\" }\nlog_dir = \"/l\"\n[h]\nsmt = \"on\"\n[h.env]\nB = \"3\"\n";
        let root = parse(text);
        let mut t = Table::of(text, 0, table(&root, "d"));
        t.merge(text, table(&root, "h"));
        let mut out = Rendered::default();
        t.write(text, "host", false, &mut out);
        assert_eq!(
            out.text,
            "\n[host]\nsmt = \"on\"\nlog_dir = \"/l\"\n\n[host.env]\nA = \"1\"\nB = \"3\"\n"
        );
        let parsed: toml::Table = toml::from_str(&out.text).unwrap();
        assert_eq!(parsed["host"]["env"]["B"].as_str(), Some("3"));
        // Each value points back at the cluster file: `"on"` and `"/l"`.
        let on = out.text.find("\"on\"").unwrap();
        assert_eq!(out.source(on), text.find("\"on\"").unwrap());
        let l = out.text.find("\"/l\"").unwrap() + 2;
        assert_eq!(out.source(l), text.find("\"/l\"").unwrap() + 2);
        let b = out.text.find("B = \"3\"").unwrap();
        assert_eq!(out.source(b), text.find("B = \"3\"").unwrap());
    }

    #[test]
    fn arrays_of_tables_and_odd_keys_are_written_back_as_headers() {
        let text = "[[s]]\nname = \"a\"\ncommand = [\n  \"x\", # why\n]\n\"a b\" = { c = 1 }\n[[s]]\nname = \"b\"\n[s.limits]\nnofile = 5\n";
        let root = parse(text);
        let Node::Tables(items) = Node::of(text, root.get("s").unwrap()) else {
            panic!("not an array of tables");
        };
        let mut out = Rendered::default();
        for t in &items {
            t.write(text, "service", true, &mut out);
        }
        let back: toml::Table = toml::from_str(&out.text).unwrap();
        let services = back["service"].as_array().unwrap();
        assert_eq!(services.len(), 2);
        assert_eq!(services[0]["a b"]["c"].as_integer(), Some(1));
        assert_eq!(services[1]["limits"]["nofile"].as_integer(), Some(5));
        assert!(out.text.contains("\"x\", # why"), "{}", out.text);
    }
}
