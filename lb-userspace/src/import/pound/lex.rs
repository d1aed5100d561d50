//! pound.cfg's lexical layer: lines into words (bare or quoted, with escapes), comments, and
//! which blocks may hold which.

use crate::import::{finish_tree, push_directive, Directive, LineError};

use super::LISTENERS;

/// Reads pound.cfg into directives; fails on an unterminated quote, an `End` too many, a
/// block left open, or a block where it cannot be (usually an `End` missing before it).
pub(in crate::import) fn tokenize(text: &str) -> Result<Vec<Directive>, LineError> {
    let mut root = Vec::new();
    // The blocks open at this point, outermost first.
    let mut open: Vec<Directive> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let words = lex_line(line, number)?;
        let (Some(first), Some(last)) = (words.first(), words.last()) else {
            continue;
        };
        if first.quoted {
            return Err(LineError {
                line: number,
                message: format!(
                    "a line starts with a directive name, not a quoted string ({:?})",
                    first.text
                ),
            });
        }
        let keyword = first.text.to_ascii_lowercase();
        if keyword == "end" {
            let Some(done) = open.pop() else {
                return Err(LineError {
                    line: number,
                    message: "End without a block to close (ListenHTTP, Service, BackEnd, \
                              Session, ... End)"
                        .to_owned(),
                });
            };
            push_directive(&mut open, &mut root, done);
            continue;
        }
        let parent = open.last().map(|block| block.keyword.to_ascii_lowercase());
        let is_block = match block_parents(&keyword, parent.as_deref()) {
            BlockRule::NotABlock => false,
            BlockRule::Allowed => true,
            BlockRule::Misplaced => {
                let (name, opened) = open
                    .last()
                    .map(|block| (block.keyword.clone(), block.line))
                    .unwrap_or_default();
                return Err(LineError {
                    line: number,
                    message: format!(
                        "{} cannot be inside {name} (opened at line {opened}): is an End \
                         missing before this line?",
                        first.text
                    ),
                });
            }
        };
        let directive = Directive {
            keyword: first.text.clone(),
            args: words[1..].iter().map(|word| word.text.clone()).collect(),
            line: number,
            text: line[first.start..last.end].to_owned(),
            block: is_block.then(Vec::new),
        };
        if is_block {
            open.push(directive);
        } else {
            push_directive(&mut open, &mut root, directive);
        }
    }
    finish_tree(&open, root, |block| {
        format!(
            "{} is never closed: add an End after its last line",
            block.keyword
        )
    })
}

pub(super) enum BlockRule {
    NotABlock,
    Allowed,
    Misplaced,
}

/// Whether `keyword` opens a block inside `parent` (`None`: the top level).
pub(super) fn block_parents(keyword: &str, parent: Option<&str>) -> BlockRule {
    let in_listener = parent.is_some_and(|p| LISTENERS.contains(&p));
    let allowed = match keyword {
        k if LISTENERS.contains(&k) => parent.is_none(),
        "service" => parent.is_none() || in_listener,
        // At the top level: Pound 4's named back-ends.
        "backend" => parent.is_none() || parent == Some("service"),
        "emergency" | "session" => parent == Some("service"),
        "rewrite" => in_listener || parent == Some("service"),
        "match" => parent.is_some(),
        "resolver" | "trustedip" => parent.is_none(),
        // `ACL "name"` defines a list at the top level and refers to one inside a service.
        "acl" if parent.is_none() => true,
        _ => return BlockRule::NotABlock,
    };
    if allowed {
        BlockRule::Allowed
    } else {
        BlockRule::Misplaced
    }
}

pub(super) struct Word {
    text: String,
    quoted: bool,
    /// Byte offsets in the line.
    start: usize,
    end: usize,
}

/// The words of one line, up to a `#` outside quotes.
pub(super) fn lex_line(line: &str, number: usize) -> Result<Vec<Word>, LineError> {
    let mut words = Vec::new();
    let mut chars = line.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        if c == '#' {
            break;
        }
        if c == '"' {
            chars.next();
            let mut text = String::new();
            let mut end = None;
            while let Some((at, c)) = chars.next() {
                match c {
                    '"' => {
                        end = Some(at + 1);
                        break;
                    }
                    '\\' => match chars.peek() {
                        Some(&(_, escaped @ ('"' | '\\'))) => {
                            text.push(escaped);
                            chars.next();
                        }
                        // Other backslashes belong to the value (regular expressions).
                        _ => text.push('\\'),
                    },
                    c => text.push(c),
                }
            }
            let Some(end) = end else {
                return Err(LineError {
                    line: number,
                    message: "unterminated quoted string: add the closing \"".to_owned(),
                });
            };
            words.push(Word {
                text,
                quoted: true,
                start,
                end,
            });
            continue;
        }
        let mut end = start;
        while let Some(&(at, c)) = chars.peek() {
            if c.is_whitespace() || c == '#' {
                break;
            }
            end = at + c.len_utf8();
            chars.next();
        }
        words.push(Word {
            text: line[start..end].to_owned(),
            quoted: false,
            start,
            end,
        });
    }
    Ok(words)
}
