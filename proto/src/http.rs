//! The request head of an HTTP/1.x request, for the metrics endpoint: the
//! only HTTP Postern serves. A client may send at most [`MAX_HEAD`] bytes
//! before the blank line; everything after it is ignored (a GET has no
//! body, and the connection closes after one answer). Parsing is
//! httparse's; what it means for us (method, path, the wanted format) is
//! decided here.

/// Longest request head accepted.
pub const MAX_HEAD: usize = 8192;
/// Most header fields.
pub const MAX_HEADERS: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text exposition format 0.0.4.
    Text,
    /// OpenMetrics 1.0.0 text.
    OpenMetrics,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// HEAD: the answer has no body.
    pub head_only: bool,
    /// The path without its query string.
    pub path: String,
    pub format: Format,
}

/// Why a request gets an error answer instead of the figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 400: not an HTTP/1.x request head.
    BadRequest,
    /// 405: a method other than GET or HEAD.
    Method,
    /// 431: more than [`MAX_HEAD`] bytes or [`MAX_HEADERS`] fields.
    TooLarge,
}

impl Refusal {
    pub fn status(self) -> (u16, &'static str) {
        match self {
            Refusal::BadRequest => (400, "Bad Request"),
            Refusal::Method => (405, "Method Not Allowed"),
            Refusal::TooLarge => (431, "Request Header Fields Too Large"),
        }
    }
}

/// Parses what has arrived so far: `Ok(None)` wants more bytes.
pub fn parse(buf: &[u8]) -> Result<Option<Request>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let status = match req.parse(buf) {
        Ok(s) => s,
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal::TooLarge),
        Err(_) => return Err(Refusal::BadRequest),
    };
    let httparse::Status::Complete(len) = status else {
        return if buf.len() >= MAX_HEAD {
            Err(Refusal::TooLarge)
        } else {
            Ok(None)
        };
    };
    if len > MAX_HEAD {
        return Err(Refusal::TooLarge);
    }
    let head_only = match req.method {
        Some("GET") => false,
        Some("HEAD") => true,
        Some(_) => return Err(Refusal::Method),
        None => return Err(Refusal::BadRequest),
    };
    let target = req.path.ok_or(Refusal::BadRequest)?;
    let path = target.split(['?', '#']).next().unwrap_or("").to_string();
    let mut format = Format::Text;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("accept") {
            let value = std::str::from_utf8(h.value).map_err(|_| Refusal::BadRequest)?;
            format = negotiate(value);
        }
    }
    Ok(Some(Request {
        head_only,
        path,
        format,
    }))
}

/// The format an Accept header prefers: OpenMetrics when it is offered at
/// a quality no lower than the text format's (Prometheus asks for it
/// first), the text format otherwise.
pub fn negotiate(accept: &str) -> Format {
    let (mut om, mut text) = (None::<f32>, None::<f32>);
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let mut q = 1.0f32;
        for p in parts {
            if let Some(v) = p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")) {
                q = v
                    .parse()
                    .ok()
                    .filter(|q: &f32| (0.0..=1.0).contains(q))
                    .unwrap_or(0.0);
            }
        }
        let slot = match media.as_str() {
            "application/openmetrics-text" => &mut om,
            "text/plain" => &mut text,
            _ => continue,
        };
        *slot = Some(slot.map_or(q, |old| old.max(q)));
    }
    match om {
        Some(q) if q > 0.0 && q >= text.unwrap_or(0.0) => Format::OpenMetrics,
        _ => Format::Text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_scrapes_get_openmetrics_and_curl_gets_text() {
        let prom = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9187\r\nUser-Agent: Prometheus/2.42.0\r\nAccept: application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1\r\nAccept-Encoding: gzip\r\nX-Prometheus-Scrape-Timeout-Seconds: 10\r\n\r\n";
        let r = parse(prom).unwrap().unwrap();
        assert_eq!(r.path, "/metrics");
        assert_eq!(r.format, Format::OpenMetrics);
        assert!(!r.head_only);
        let curl = b"GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n";
        let r = parse(curl).unwrap().unwrap();
        assert_eq!((r.path.as_str(), r.format), ("/metrics", Format::Text));
        assert_eq!(
            negotiate("text/plain;q=1, application/openmetrics-text;q=0.5"),
            Format::Text
        );
        assert_eq!(negotiate("application/openmetrics-text;q=0"), Format::Text);
    }

    #[test]
    fn partial_heads_wait_and_bad_ones_are_refused() {
        assert_eq!(parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"), Ok(None));
        assert_eq!(parse(b""), Ok(None));
        assert_eq!(
            parse(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Err(Refusal::Method)
        );
        assert!(
            parse(
                b"HEAD /metrics HTTP/1.1

"
            )
            .unwrap()
            .unwrap()
            .head_only
        );
        assert_eq!(parse(b"\x16\x03\x01\x02\x00"), Err(Refusal::BadRequest));
        let mut big = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_HEAD + 10, b'a');
        assert_eq!(parse(&big), Err(Refusal::TooLarge));
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse(&many), Err(Refusal::TooLarge));
    }
}
