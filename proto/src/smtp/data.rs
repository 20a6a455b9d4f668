//! The DATA stream: dot-unstuffing, line endings, and the end of data.
//!
//! Rules (SMTP smuggling-proof under every setting):
//! - the only end of data is `<CR><LF>.<CR><LF>`: a `.` line that starts
//!   after a real CRLF (or at the very start of DATA) and ends with CRLF;
//! - a bare CR never ends a line; it stays in the content as it is;
//! - a bare LF either ends a line and is stored as CRLF (`Normalize`), or
//!   makes the session fail (`Reject`: "550 5.5.2 Error: bare <LF> received");
//! - a line that starts with `.` and has more on it loses the first `.`;
//!   a lone `.` that does not qualify as the end (it followed or ended with a
//!   bare LF) is content.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BareLf {
    Normalize,
    Reject,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// All input consumed; more is needed.
    More,
    /// The end of data was found; the count includes the final LF.
    End,
    /// A bare LF arrived in Reject mode.
    BareLf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    /// At the start of a line; `real`: the previous line ended with CRLF.
    Start { real: bool },
    /// Saw `.` at the start of a line.
    Dot { real: bool },
    /// Saw `.` CR at the start of a line.
    DotCr { real: bool },
    /// Inside a line.
    Mid,
    /// Saw CR inside a line (or after a dot-stuffed dot).
    Cr,
}

#[derive(Debug, Clone)]
pub struct DataDecoder {
    st: St,
    mode: BareLf,
    /// Bare LFs seen (normalized), for the log.
    pub bare_lf: u64,
}

impl DataDecoder {
    /// A decoder for the bytes after `354` (which follows the DATA command's CRLF).
    pub fn new(mode: BareLf) -> Self {
        Self {
            st: St::Start { real: true },
            mode,
            bare_lf: 0,
        }
    }

    fn bare(&mut self, out: &mut Vec<u8>) -> Result<(), ()> {
        match self.mode {
            BareLf::Reject => Err(()),
            BareLf::Normalize => {
                self.bare_lf += 1;
                out.extend_from_slice(b"\r\n");
                self.st = St::Start { real: false };
                Ok(())
            }
        }
    }

    /// Decodes `input`, appending content to `out`. Returns how many bytes
    /// were consumed and whether the end was found.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, Progress) {
        let mut i = 0;
        while i < input.len() {
            let c = input[i];
            match self.st {
                St::Mid => {
                    // Fast path: copy a run of ordinary bytes.
                    let run = input[i..]
                        .iter()
                        .position(|&b| b == b'\r' || b == b'\n')
                        .unwrap_or(input.len() - i);
                    if run > 0 {
                        out.extend_from_slice(&input[i..i + run]);
                        i += run;
                        continue;
                    }
                    if c == b'\r' {
                        self.st = St::Cr;
                    } else if self.bare(out).is_err() {
                        return (i, Progress::BareLf);
                    }
                }
                St::Start { real } => match c {
                    b'.' => self.st = St::Dot { real },
                    b'\r' => self.st = St::Cr,
                    b'\n' => {
                        if self.bare(out).is_err() {
                            return (i, Progress::BareLf);
                        }
                    }
                    _ => {
                        out.push(c);
                        self.st = St::Mid;
                    }
                },
                St::Dot { real } => match c {
                    b'\r' => self.st = St::DotCr { real },
                    b'\n' => {
                        // "." ended by a bare LF: never the end of data.
                        if self.mode == BareLf::Reject {
                            return (i, Progress::BareLf);
                        }
                        out.push(b'.');
                        if self.bare(out).is_err() {
                            return (i, Progress::BareLf);
                        }
                    }
                    _ => {
                        // Dot-stuffed line: the first dot goes.
                        out.push(c);
                        self.st = St::Mid;
                    }
                },
                St::DotCr { real } => match c {
                    b'\n' if real => return (i + 1, Progress::End),
                    b'\n' => {
                        // "." CRLF after a bare-LF line: content, not the end.
                        out.extend_from_slice(b".\r\n");
                        self.st = St::Start { real: true };
                    }
                    _ => {
                        // "." CR x: a dot-stuffed line holding a bare CR.
                        out.push(b'\r');
                        self.st = St::Mid;
                        continue; // reprocess c
                    }
                },
                St::Cr => match c {
                    b'\n' => {
                        out.extend_from_slice(b"\r\n");
                        self.st = St::Start { real: true };
                    }
                    b'\r' => out.push(b'\r'),
                    _ => {
                        out.push(b'\r');
                        self.st = St::Mid;
                        continue; // reprocess c
                    }
                },
            }
            i += 1;
        }
        (i, Progress::More)
    }
}

/// A bare LF arrived where bare LFs are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BareLfError;

/// Line-ending normalization for BDAT chunks (no dot handling): a bare LF
/// becomes CRLF or is refused; CRs are kept.
#[derive(Debug, Clone, Default)]
pub struct LineNormalizer {
    prev_cr: bool,
    pub bare_lf: u64,
}

impl LineNormalizer {
    pub fn feed(
        &mut self,
        input: &[u8],
        mode: BareLf,
        out: &mut Vec<u8>,
    ) -> Result<(), BareLfError> {
        for &c in input {
            if c == b'\n' && !self.prev_cr {
                if mode == BareLf::Reject {
                    return Err(BareLfError);
                }
                self.bare_lf += 1;
                out.push(b'\r');
            }
            out.push(c);
            self.prev_cr = c == b'\r';
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` one byte at a time and all at once; both must agree.
    fn decode(input: &[u8], mode: BareLf) -> (Vec<u8>, Progress, usize) {
        let mut d = DataDecoder::new(mode);
        let mut out = Vec::new();
        let (n, p) = d.feed(input, &mut out);
        let mut d2 = DataDecoder::new(mode);
        let mut out2 = Vec::new();
        let mut used = 0;
        let mut p2 = Progress::More;
        for b in input {
            let (k, pp) = d2.feed(std::slice::from_ref(b), &mut out2);
            used += k;
            if pp != Progress::More {
                p2 = pp;
                break;
            }
        }
        assert_eq!(
            (&out, p, n),
            (&out2, p2, used),
            "byte-wise decoding differs for {input:?}"
        );
        (out, p, n)
    }

    #[test]
    fn plain_end_and_unstuffing() {
        let (out, p, n) = decode(
            b"Subject: x\r\n\r\n..leading dot\r\n.\r\nQUIT\r\n",
            BareLf::Normalize,
        );
        assert_eq!(p, Progress::End);
        assert_eq!(out, b"Subject: x\r\n\r\n.leading dot\r\n");
        assert_eq!(n, 32);
        let (out, p, _) = decode(b".\r\n", BareLf::Normalize);
        assert_eq!((out.as_slice(), p), (&b""[..], Progress::End));
    }

    #[test]
    fn smuggling_variants_never_end_data() {
        for v in [
            &b"a\n.\nMAIL FROM:<x>\r\n"[..],
            b"a\r.\rMAIL FROM:<x>\r\n",
            b"a\r\n.\nMAIL FROM:<x>\r\n",
            b"a\n.\r\nMAIL FROM:<x>\r\n",
            b"a\r\n.\r\rMAIL FROM:<x>\r\n",
            b"a\r\n.\x00\r\nMAIL FROM:<x>\r\n",
            b"a\r\n\x00.\r\nMAIL FROM:<x>\r\n",
        ] {
            let (out, p, n) = decode(v, BareLf::Normalize);
            assert_eq!(p, Progress::More, "{v:?} ended data");
            assert_eq!(n, v.len());
            assert!(out.windows(4).any(|w| w == b"MAIL"), "{v:?}");
        }
    }

    #[test]
    fn bare_lf_normalized_or_rejected() {
        let (out, p, _) = decode(b"a\nb\r\n.\r\n", BareLf::Normalize);
        assert_eq!((out.as_slice(), p), (&b"a\r\nb\r\n"[..], Progress::End));
        let (_, p, n) = decode(b"ab\ncd", BareLf::Reject);
        assert_eq!((p, n), (Progress::BareLf, 2));
        // A bare CR is kept, and never a line end.
        let (out, p, _) = decode(b"a\rb\r\n.\r\n", BareLf::Reject);
        assert_eq!((out.as_slice(), p), (&b"a\rb\r\n"[..], Progress::End));
    }

    #[test]
    fn lone_dot_after_bare_lf_is_content() {
        let (out, p, _) = decode(b"a\n.\r\nb\r\n.\r\n", BareLf::Normalize);
        assert_eq!(p, Progress::End);
        assert_eq!(out, b"a\r\n.\r\nb\r\n");
    }

    #[test]
    fn normalizer() {
        let mut n = LineNormalizer::default();
        let mut out = Vec::new();
        n.feed(b"a\nb\r", BareLf::Normalize, &mut out).unwrap();
        n.feed(b"\nc", BareLf::Normalize, &mut out).unwrap();
        assert_eq!(out, b"a\r\nb\r\nc");
        assert!(
            LineNormalizer::default()
                .feed(b"x\n", BareLf::Reject, &mut Vec::new())
                .is_err()
        );
    }
}
