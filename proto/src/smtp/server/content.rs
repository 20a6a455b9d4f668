//! DATA and BDAT content, the end-of-data decision, and the commit.
use super::*;
use crate::smtp::data::{BareLf, Progress};

fn r(code: u16, enh: &str, text: &str) -> Reply {
    Reply::new(code, enh, text)
}

impl Server {
    fn bare_lf_mode(&self) -> BareLf {
        if self.bare_lf_ok {
            BareLf::Normalize
        } else {
            BareLf::Reject
        }
    }

    /// What DATA and BDAT need: MAIL, then at least one accepted RCPT
    /// (Postfix's words: in a transaction whose recipients were all
    /// refused, there are "no valid recipients").
    fn need_txn(&self) -> Option<Reply> {
        match &self.txn {
            None => Some(r(503, "5.5.1", "Error: need MAIL command")),
            Some(t) if t.rcpts.is_empty() => Some(r(554, "5.5.1", "Error: no valid recipients")),
            _ => None,
        }
    }

    pub(super) fn data(&mut self) {
        if let Some(reply) = self.need_txn() {
            return self.done("data", reply);
        }
        if self.txn.as_ref().is_some_and(|t| t.bdat.is_some()) {
            return self.done("data", r(503, "5.5.1", "Error: DATA after BDAT"));
        }
        if self.cfg.checks.has(Stage::Data) {
            self.ask(Pending::Data, Action::Decide(Stage::Data));
        } else {
            self.send_recipients(None);
        }
    }

    /// A verdict on the whole transaction (DATA, end of data): a discard
    /// marks it, a reject logs, drops it whole and replies. True when the
    /// transaction goes on.
    fn transaction_verdict(&mut self, stage: Stage, verb: &str, v: Verdict) -> bool {
        match v {
            Verdict::Accept => true,
            Verdict::Discard(text) => {
                if let Some(t) = self.txn.as_mut() {
                    t.discard = Some(text);
                }
                true
            }
            Verdict::Reject { reply, log } => {
                if log {
                    self.reject_log(stage, &reply, None, None);
                }
                // Nothing decided for its recipients may reach the next one.
                self.abort_txn();
                self.done(verb, reply);
                false
            }
        }
    }

    pub(super) fn data_verdict(&mut self, v: Verdict) {
        if self.transaction_verdict(Stage::Data, "data", v) {
            self.send_recipients(None);
        }
    }

    /// Hands the accepted recipients to cleanup before the content.
    fn send_recipients(&mut self, bdat: Option<Chunk>) {
        let list = self
            .txn
            .as_ref()
            .map(|t| t.rcpts.clone())
            .unwrap_or_default();
        self.ask(Pending::Sink { bdat }, Action::Recipients(list));
    }

    pub(super) fn sink_answer(&mut self, bdat: Option<Chunk>, a: Answer) {
        let verb = if bdat.is_some() { "bdat" } else { "data" };
        if a != Answer::Sent {
            let reply = self.cleanup_lost_reply();
            return match bdat {
                // The chunk's bytes must still be read, or they would be
                // taken for commands.
                Some(c) => self.read_chunk(Chunk {
                    refused: Some(reply),
                    ..c
                }),
                None => self.done(verb, reply),
            };
        }
        match bdat {
            Some(c) => {
                if let Some(t) = self.txn.as_mut() {
                    t.bdat = Some(Bdat {
                        norm: LineNormalizer::default(),
                        size: 0,
                        too_big: false,
                    });
                }
                self.read_chunk(c);
            }
            None => {
                self.say(&Reply::bare(354, "End data with <CR><LF>.<CR><LF>"));
                self.actions.push_back(Action::Flush);
                let mode = self.bare_lf_mode();
                self.phase = Phase::Data {
                    dec: DataDecoder::new(mode),
                    out: Vec::new(),
                    size: 0,
                    too_big: false,
                };
            }
        }
    }

    /// The channel to cleanup broke: the transaction is gone.
    fn cleanup_lost_reply(&mut self) -> Reply {
        let id = self
            .txn
            .as_ref()
            .map_or("NOQUEUE".to_string(), |t| t.queue_id.clone());
        self.log(format!("warning: {id}: lost the channel to cleanup"));
        self.abort_txn();
        r(451, "4.3.0", "Error: queue file write error")
    }

    pub(super) fn bdat(&mut self, size: u64, last: bool, needs_tls: bool) {
        // The chunk must be read whatever the answer, or its bytes would
        // be taken for commands. A chunk no message could be made of ends
        // the session instead.
        let refused = if needs_tls {
            Some(r(530, "5.7.0", "Must issue a STARTTLS command first"))
        } else if !self.esmtp {
            Some(r(503, "5.5.1", "Error: BDAT without EHLO"))
        } else {
            self.need_txn()
        };
        if size > self.cfg.message_size_limit.saturating_add(1 << 20) {
            self.count("bdat", false);
            self.abort_txn();
            self.say(&r(552, "5.3.4", "Error: message file too big"));
            self.actions.push_back(Action::Flush);
            return self.end(End::Quit);
        }
        let chunk = Chunk {
            size,
            remaining: size,
            last,
            refused,
        };
        let first = chunk.refused.is_none() && self.txn.as_ref().is_some_and(|t| t.bdat.is_none());
        if first {
            self.send_recipients(Some(chunk));
        } else {
            self.read_chunk(chunk);
        }
    }

    fn read_chunk(&mut self, c: Chunk) {
        if c.remaining == 0 {
            self.chunk_done(c);
        } else {
            self.phase = Phase::Chunk(c);
        }
    }

    /// Content bytes (DATA, or BDAT up to the chunk's remaining size).
    /// Returns how many were consumed; the rest belongs to what follows.
    pub fn content(&mut self, input: &[u8]) -> usize {
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Data {
                dec,
                out,
                size,
                too_big,
            } => self.data_content(dec, out, size, too_big, input),
            Phase::Chunk(c) => self.chunk_content(c, input),
            other => {
                self.phase = other;
                0
            }
        }
    }

    fn emit(&mut self, mut data: Vec<u8>) {
        let max = self.cfg.content_chunk.max(1);
        if data.len() <= max {
            self.actions.push_back(Action::Content(data));
            return;
        }
        while !data.is_empty() {
            let rest = data.split_off(data.len().min(max));
            self.actions.push_back(Action::Content(data));
            data = rest;
        }
    }

    fn data_content(
        &mut self,
        mut dec: DataDecoder,
        mut out: Vec<u8>,
        mut size: u64,
        mut too_big: bool,
        input: &[u8],
    ) -> usize {
        let before = out.len();
        let (n, p) = dec.feed(input, &mut out);
        size += (out.len() - before) as u64;
        if size > self.cfg.message_size_limit {
            too_big = true;
        }
        let lost = self.txn.as_ref().is_none_or(|t| t.lost);
        if too_big || lost {
            out.clear();
        } else if out.len() >= self.cfg.content_chunk / 2 || p == Progress::End {
            let chunk = std::mem::take(&mut out);
            if !chunk.is_empty() {
                self.emit(chunk);
            }
        }
        match p {
            Progress::More => {
                self.phase = Phase::Data {
                    dec,
                    out,
                    size,
                    too_big,
                }
            }
            Progress::End => {
                self.last = "END-OF-MESSAGE";
                self.content_end("data", too_big, size);
            }
            Progress::BareLf => {
                self.abort_txn();
                self.count("data", false);
                self.bare_lf();
            }
        }
        n
    }

    fn chunk_content(&mut self, mut c: Chunk, input: &[u8]) -> usize {
        let n = input
            .len()
            .min(usize::try_from(c.remaining).unwrap_or(usize::MAX));
        c.remaining -= n as u64;
        if c.refused.is_none() {
            let mode = self.bare_lf_mode();
            let limit = self.cfg.message_size_limit;
            let Some(t) = self.txn.as_mut() else {
                self.phase = Phase::Chunk(c);
                return n;
            };
            let lost = t.lost;
            let Some(b) = t.bdat.as_mut() else {
                self.phase = Phase::Chunk(c);
                return n;
            };
            let mut out = Vec::with_capacity(n + 16);
            if b.norm.feed(&input[..n], mode, &mut out).is_err() {
                self.abort_txn();
                self.count("bdat", false);
                self.bare_lf();
                return n;
            }
            b.size += out.len() as u64;
            if b.size > limit {
                b.too_big = true;
            }
            if !b.too_big && !lost && !out.is_empty() {
                self.emit(out);
            }
        }
        self.read_chunk(c);
        n
    }

    fn chunk_done(&mut self, c: Chunk) {
        if let Some(reply) = c.refused {
            return self.done("bdat", reply);
        }
        let too_big = self
            .txn
            .as_ref()
            .and_then(|t| t.bdat.as_ref())
            .is_some_and(|b| b.too_big);
        if !c.last {
            if self.txn.as_ref().is_some_and(|t| t.lost) {
                let reply = self.cleanup_lost_reply();
                return self.done("bdat", reply);
            }
            return self.done("bdat", r(250, "2.0.0", &format!("Ok: {} bytes", c.size)));
        }
        self.last = "END-OF-MESSAGE";
        let size = self
            .txn
            .as_ref()
            .and_then(|t| t.bdat.as_ref())
            .map_or(0, |b| b.size);
        self.content_end("bdat", too_big, size);
    }

    /// The whole content is in: the end-of-data checks, then the commit.
    fn content_end(&mut self, verb: &'static str, too_big: bool, size: u64) {
        if let Some(t) = self.txn.as_mut() {
            t.size = size;
        }
        if self.txn.as_ref().is_none_or(|t| t.lost) {
            let reply = self.cleanup_lost_reply();
            return self.done(verb, reply);
        }
        if too_big {
            self.abort_txn();
            return self.done(verb, r(552, "5.3.4", "Error: message file too big"));
        }
        if self.cfg.checks.has(Stage::EndOfData) {
            self.ask(
                Pending::EndOfData { verb },
                Action::Decide(Stage::EndOfData),
            );
        } else {
            self.commit(verb);
        }
    }

    pub(super) fn eod_verdict(&mut self, verb: &'static str, v: Verdict) {
        if self.transaction_verdict(Stage::EndOfData, verb, v) {
            self.commit(verb);
        }
    }

    fn commit(&mut self, verb: &'static str) {
        let Some(t) = self.txn.as_ref() else {
            return self.done(verb, r(451, "4.3.0", "Error: queue file write error"));
        };
        if let Some(why) = t.discard.clone() {
            // Acknowledged and thrown away, as Postfix's DISCARD is.
            let id = t.queue_id.clone();
            self.log(format!("{id}: discard: {why}"));
            self.abort_txn();
            return self.done(verb, r(250, "2.0.0", &format!("Ok: queued as {id}")));
        }
        self.ask(Pending::Commit { verb }, Action::Commit);
    }

    pub(super) fn commit_answer(&mut self, verb: &'static str, a: Answer) {
        // Whatever the answer, the transaction is over: the shell has
        // committed, aborted or lost its channel.
        let Some(txn) = self.txn.take() else {
            return self.done(verb, r(451, "4.3.0", "Error: queue file write error"));
        };
        let reply = match a {
            Answer::Committed => r(250, "2.0.0", &format!("Ok: queued as {}", txn.queue_id)),
            Answer::CommitReply(reply) => reply,
            Answer::PeerGone => {
                self.log(format!(
                    "{}: discarded: the client hung up before the final commit",
                    txn.queue_id
                ));
                self.count(verb, false);
                return self.end(End::HungUp);
            }
            Answer::Failed(reply) => reply,
            _ => r(451, "4.3.0", "Error: queue file write error"),
        };
        if reply.is_error() {
            let line = format!(
                "{}: reject: END-OF-MESSAGE from {}: {}; from=<{}> proto={} helo=<{}>",
                txn.queue_id,
                self.client,
                reply.summary(),
                txn.sender.address(),
                self.log_proto(),
                self.helo.as_deref().unwrap_or("")
            );
            self.log(line);
        }
        // 421 (a Milter's shutdown default action): the session ends.
        if reply.code == 421 {
            self.count(verb, false);
            self.say(&reply);
            return self.end(End::Quit);
        }
        self.done(verb, reply);
    }
}
