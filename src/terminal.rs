//! Text from outside (object keys, reasons, dataset names, field values in a report) made safe to
//! print on a terminal.
//!
//! A key is whatever an uploader chose. Printed raw, `ESC [ 2 J` clears the operator's screen, an
//! OSC sequence can set the window title or plant a link, a newline forges a line of output, and a
//! right-to-left override makes `evil\u{202e}vsc.exe` read as `evilexe.csv`. [`escape`] is the one
//! function every line the CLI prints from such text goes through; JSON output (`--json`) is escaped
//! by its encoder instead.

use std::borrow::Cow;

/// `text` with every character a terminal would act on rather than show written as a Rust-style
/// escape: `\n`, `\r`, `\t`, `\e` (ESC), `\u{...}` for the other control characters (C0, DEL, C1),
/// the bidirectional controls, invisible format characters and line/paragraph separators; and `\\`
/// for a backslash, so an escape in the output always means an escaped character. Text with none of
/// these is returned as is, without a copy.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{1b}' => out.push_str("\\e"),
            c if needs_escape(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c == '\\' || c.is_control() || is_invisible_format(c)
}

/// Unicode's format characters (category Cf) and the two separators (Zl, Zp): they change how the
/// text around them is laid out or are not shown at all.
fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{ad}'                      // soft hyphen
        | '\u{600}'..='\u{605}'
        | '\u{61c}'                   // Arabic letter mark
        | '\u{6dd}' | '\u{70f}' | '\u{890}' | '\u{891}' | '\u{8e2}'
        | '\u{180e}'                  // Mongolian vowel separator
        | '\u{200b}'..='\u{200f}'     // zero-width space, joiners, LRM, RLM
        | '\u{2028}'..='\u{202e}'     // line/paragraph separators, embeddings and overrides
        | '\u{2060}'..='\u{2064}'     // word joiner, invisible operators
        | '\u{2066}'..='\u{206f}'     // isolates, deprecated format characters
        | '\u{feff}'                  // byte order mark, zero-width no-break space
        | '\u{fff9}'..='\u{fffb}'     // interlinear annotations
        | '\u{110bd}' | '\u{110cd}'
        | '\u{13430}'..='\u{1343f}'
        | '\u{1bca0}'..='\u{1bca3}'
        | '\u{1d173}'..='\u{1d17a}'
        | '\u{e0001}' | '\u{e0020}'..='\u{e007f}' // tags: invisible ASCII look-alikes
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_untouched_and_not_copied() {
        for plain in [
            "daily/2026-11-01.csv",
            "über/naïve café.csv",
            "日本/データ.csv",
            "",
        ] {
            assert!(
                matches!(escape(plain), Cow::Borrowed(s) if s == plain),
                "{plain}"
            );
        }
    }

    #[test]
    fn what_a_terminal_acts_on_is_escaped() {
        for (raw, shown) in [
            ("a\u{1b}[2Jb", "a\\e[2Jb"),
            ("\u{1b}]0;pwned\u{7}", "\\e]0;pwned\\u{7}"),
            ("one\ntwo\r\tthree", "one\\ntwo\\r\\tthree"),
            ("evil\u{202e}vsc.exe", "evil\\u{202e}vsc.exe"),
            ("\u{2066}x\u{2069}\u{200f}", "\\u{2066}x\\u{2069}\\u{200f}"),
            ("zero\u{200b}width\u{feff}", "zero\\u{200b}width\\u{feff}"),
            ("del\u{7f} c1\u{9b}31m", "del\\u{7f} c1\\u{9b}31m"),
            ("tag\u{e0041}", "tag\\u{e0041}"),
            ("line\u{2028}sep", "line\\u{2028}sep"),
            ("back\\slash\\e", "back\\\\slash\\\\e"),
        ] {
            let got = escape(raw);
            assert_eq!(got, shown, "{raw:?}");
            assert!(!got.chars().any(|c| c.is_control()), "{got:?}");
        }
    }
}
