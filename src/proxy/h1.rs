//! HTTP/1.1 to the upstream, driven from the request's own task.
//!
//! A `Connection` is a byte stream and the bytes read from it but not yet used. `Connection::send` writes
//! one request (head, then the body with the framing its headers or its size call for), reads the
//! response head, and hands back a response whose body (`ResponseBody`) reads the rest from the same
//! stream and yields the connection back once the message has ended. No task sits between the request and
//! its upstream connection: the request's task writes and reads, so an exchange costs no wake-up or
//! channel hop, and an idle connection holds no buffer.
//!
//! Responses are read to the letter of RFC 9112: the framing follows section 6.3 (a `HEAD` request and
//! `1xx`, `204`, `304` responses have no content; `Transfer-Encoding` ending in `chunked`; one
//! `Content-Length`, repeated values only when equal; otherwise until the upstream closes), a head larger
//! than `MAX_HEAD` or with more than `MAX_HEADERS` fields is refused, as is a response carrying both
//! `Transfer-Encoding` and `Content-Length` or `Transfer-Encoding` in HTTP/1.0 (a framing conflict that
//! smuggling relies on). Interim `1xx` responses other than `101` are read and dropped. A connection is
//! reused only when the response said it could be (HTTP/1.1 without `Connection: close`, or HTTP/1.0 with
//! `Connection: keep-alive`), its body was read exactly to its end, nothing followed it, and the whole
//! request was sent.
//!
//! Both directions run at once: a request body still being sent when the response head arrives goes on
//! being sent while the response body is read (an upstream may stream its answer as it reads, or answer
//! early and stop reading; neither stalls the other).

use std::error::Error as StdError;
use std::fmt;
use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::ops::Range;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// The longest response head (status line and fields) accepted, and the longest trailer section.
pub const MAX_HEAD: usize = 64 * 1024;
/// The most header fields a response head may have.
pub const MAX_HEADERS: usize = 128;
/// How many interim (`1xx`) responses may precede the final one.
const MAX_INTERIM: usize = 16;
/// How much is read at once while waiting for a response head.
const HEAD_READ: usize = 4 * 1024;
/// How much is read at once of a body.
const BODY_READ: usize = 16 * 1024;
/// The longest chunk-size line (size and extensions).
const MAX_CHUNK_LINE: usize = 4 * 1024;

type BoxError = Box<dyn StdError + Send + Sync>;

/// A byte stream to an upstream.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Ready when a read would find something (data, end of stream or an error). A stream that cannot
    /// tell is always ready; one that can lets a waiting exchange hold no read buffer.
    fn poll_read_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl Io for TcpStream {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }
}

/// Why an exchange failed.
#[derive(Debug)]
pub enum Error {
    /// Reading from or writing to the upstream failed.
    Io(io::Error),
    /// The upstream closed the connection before the response was complete.
    Closed(&'static str),
    /// The upstream's response is not valid HTTP/1.1.
    Invalid(&'static str),
    /// The upstream's response head could not be parsed.
    Parse(httparse::Error),
    /// The request body could not be read from the client.
    Body(BoxError),
}

impl Error {
    /// Whether the client's request body failed, rather than the upstream.
    pub fn is_request_body(&self) -> bool {
        matches!(self, Error::Body(_))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(_) => write!(f, "connection error"),
            Error::Closed(when) => write!(f, "the upstream closed the connection {when}"),
            Error::Invalid(what) => write!(f, "invalid response: {what}"),
            Error::Parse(e) => write!(f, "invalid response head: {e}"),
            Error::Body(_) => write!(f, "the request body failed"),
        }
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            Error::Body(e) => Some(e.as_ref()),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e)
    }
}

/// A failed `send`: the request comes back when it may be sent again on another connection (it never
/// reached the upstream's application: see `Connection::send`).
pub enum SendError<B> {
    Retry(Box<Request<B>>, Error),
    Failed(Error),
}

/// One HTTP/1.1 connection to an upstream.
pub struct Connection<S> {
    io: S,
    /// Bytes read and not used yet. Empty, and without an allocation, between exchanges.
    buf: BytesMut,
    /// Whether an exchange has been completed on it before.
    reused: bool,
}

/// How a request body goes on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Upload {
    None,
    Length(u64),
    Chunked,
}

/// What the response head said about the rest of the message.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

impl<S: Io> Connection<S> {
    pub fn new(io: S) -> Connection<S> {
        Connection {
            io,
            buf: BytesMut::new(),
            reused: false,
        }
    }

    /// Whether an idle connection can carry another request: the upstream has neither closed it nor sent
    /// anything unasked. Looks without waiting.
    pub fn is_usable(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut byte = [0u8; 1];
        let mut probe = ReadBuf::new(&mut byte);
        // Pending: nothing to read, the connection is quiet. Anything else (the end of the stream, an
        // error, a stray byte) makes it unusable.
        Pin::new(&mut self.io)
            .poll_read(&mut cx, &mut probe)
            .is_pending()
    }

    /// Send `req` and read the response head. The body is sent as its headers say: `Content-Length`
    /// when the request has one (or its body's exact size is known), nothing when the body is empty,
    /// chunked otherwise. An upstream may answer before the body is sent in full; the rest is then not
    /// sent, and the connection not reused.
    ///
    /// A request without a body and with an idempotent method, on a connection that carried an exchange
    /// before, comes back in `SendError::Retry` when the connection failed before a byte of a response
    /// arrived: the upstream most likely closed it while it was idle, and RFC 9110 (section 9.2.2)
    /// allows sending such a request again.
    pub async fn send<B>(
        mut self,
        req: Request<B>,
    ) -> Result<Response<ResponseBody<S>>, SendError<B>>
    where
        B: Body<Data = Bytes> + Unpin + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let upload = upload_framing(&req);
        let head = encode_head(&req, upload);
        let method_head = req.method() == Method::HEAD;
        if upload == Upload::None || (upload == Upload::Length(0) && req.body().is_end_stream()) {
            let may_retry = self.reused && is_idempotent(req.method());
            let sent = async {
                self.io.write_all(&head).await?;
                self.io.flush().await
            }
            .await;
            let result = match sent {
                Ok(()) => self.read_response(method_head, true).await,
                Err(e) => Err((Error::Io(e), true)),
            };
            return match result {
                Ok(response) => Ok(response),
                Err((e, nothing_read)) if may_retry && nothing_read && is_connection_loss(&e) => {
                    Err(SendError::Retry(Box::new(req), e))
                }
                Err((e, _)) => Err(SendError::Failed(e)),
            };
        }
        let (_, body) = req.into_parts();
        self.send_with_body(head, body, upload, method_head)
            .await
            .map_err(SendError::Failed)
    }

    /// Write the head and the body while watching for the response: an upstream that answers early (a
    /// `413`, a redirect, a stream of its own) gets its answer passed on at once; what is left of the
    /// body goes on with the response body (`ResponseBody`).
    async fn send_with_body<B>(
        mut self,
        head: Vec<u8>,
        body: B,
        upload: Upload,
        method_head: bool,
    ) -> Result<Response<ResponseBody<S>>, Error>
    where
        B: Body<Data = Bytes> + Unpin + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let mut sender = BodySender::new(head, body, upload);
        let mut head_read = false;
        // Until the response head: write what can be written, read what has come.
        let outcome = poll_fn(|cx| {
            if !sender.done {
                match sender.poll_send(cx, &mut self.io) {
                    Poll::Ready(Ok(())) => sender.done = true,
                    // The client's body failed: nothing more can be sent, and the request is incomplete.
                    Poll::Ready(Err(e @ Error::Body(_))) => return Poll::Ready(Err(e)),
                    // The upstream stopped reading (it may have answered and closed): what it said, if
                    // anything, is still to be read.
                    Poll::Ready(Err(_)) => {
                        sender.done = true;
                        sender.broken = true;
                    }
                    Poll::Pending => {}
                }
            }
            match self.poll_head(cx, method_head) {
                Poll::Ready(result) => {
                    head_read = true;
                    Poll::Ready(result)
                }
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        debug_assert!(head_read || outcome.is_err());
        let (parts, framing, keep_alive) = outcome?;
        // Sent in full and not interrupted, or the connection cannot carry another request.
        let complete = !sender.broken;
        let mut response = self.into_response(parts, framing, keep_alive && complete);
        if !sender.done {
            response.body_mut().upload = Some(Box::new(sender));
        }
        Ok(response)
    }

    /// Read the response head and make the response. The flag that comes with an error says whether
    /// nothing at all had been read.
    async fn read_response(
        mut self,
        method_head: bool,
        complete: bool,
    ) -> Result<Response<ResponseBody<S>>, (Error, bool)> {
        match poll_fn(|cx| self.poll_head(cx, method_head)).await {
            Ok((parts, framing, keep_alive)) => {
                Ok(self.into_response(parts, framing, keep_alive && complete))
            }
            Err(e) => {
                let nothing = self.buf.is_empty();
                Err((e, nothing))
            }
        }
    }

    fn into_response(
        self,
        parts: http::response::Parts,
        framing: Framing,
        keep_alive: bool,
    ) -> Response<ResponseBody<S>> {
        let switching = parts.status == StatusCode::SWITCHING_PROTOCOLS;
        let state = match framing {
            Framing::Empty => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(Chunk::Size),
            Framing::UntilClose => State::UntilClose,
        };
        let body = ResponseBody {
            conn: Some(self),
            state,
            keep_alive: keep_alive && !switching && framing != Framing::UntilClose,
            upgrade: switching,
            upload: None,
        };
        Response::from_parts(parts, body)
    }

    /// Read until a final response head is complete; interim responses are dropped.
    #[allow(clippy::type_complexity)]
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        method_head: bool,
    ) -> Poll<Result<(http::response::Parts, Framing, bool), Error>> {
        let mut interim = 0;
        loop {
            if !self.buf.is_empty() {
                match parse_head(&mut self.buf, method_head)? {
                    Some(Parsed::Interim) => {
                        interim += 1;
                        if interim > MAX_INTERIM {
                            return Poll::Ready(Err(Error::Invalid("too many interim responses")));
                        }
                        continue;
                    }
                    Some(Parsed::Final(parts, framing, keep_alive)) => {
                        return Poll::Ready(Ok((parts, framing, keep_alive)))
                    }
                    None if self.buf.len() >= MAX_HEAD => {
                        return Poll::Ready(Err(Error::Invalid("response head too large")))
                    }
                    None => {}
                }
            }
            if self.buf.is_empty() {
                // Nothing buffered: wait for the upstream without holding a buffer.
                ready!(self.io.poll_read_ready(cx))?;
            }
            let n = ready!(poll_read(&mut self.io, &mut self.buf, HEAD_READ, cx))?;
            if n == 0 {
                return Poll::Ready(Err(Error::Closed("before a response")));
            }
        }
    }
}

impl<S> Connection<S> {
    /// The stream and what was read past the response head, for a connection that switched protocols.
    pub fn into_upgraded(self) -> (S, Bytes) {
        (self.io, self.buf.freeze())
    }
}

/// A read into `buf` of at most about `want` bytes.
fn poll_read<S: Io>(
    io: &mut S,
    buf: &mut BytesMut,
    want: usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < want {
        buf.reserve(want);
    }
    tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)
}

/// Failures after which a request may have been lost with its connection, not refused.
fn is_connection_loss(e: &Error) -> bool {
    match e {
        Error::Closed(_) => true,
        Error::Io(e) => matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof
        ),
        _ => false,
    }
}

/// RFC 9110, section 9.2.2.
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

fn upload_framing<B: Body>(req: &Request<B>) -> Upload {
    let body = req.body();
    if let Some(length) = req.headers().get(header::CONTENT_LENGTH) {
        // The client's own Content-Length, checked by the server that read the request.
        if let Some(n) = length.to_str().ok().and_then(|s| s.parse::<u64>().ok()) {
            return Upload::Length(n);
        }
    }
    if body.is_end_stream() {
        return Upload::None;
    }
    match body.size_hint().exact() {
        Some(n) => Upload::Length(n),
        None => Upload::Chunked,
    }
}

/// The request head: request line, the fields (but `Content-Length` and `Transfer-Encoding`, which the
/// framing sets), the framing field, the empty line.
fn encode_head<B>(req: &Request<B>, upload: Upload) -> Vec<u8> {
    let target = req
        .uri()
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str);
    let method = req.method().as_str();
    let fields: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    let mut head = Vec::with_capacity(method.len() + target.len() + fields + 64);
    head.extend_from_slice(method.as_bytes());
    head.push(b' ');
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in req.headers() {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    match upload {
        Upload::None => {
            // A method whose requests normally carry content says it has none (RFC 9110, 8.6).
            if matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH) {
                head.extend_from_slice(b"content-length: 0\r\n");
            }
        }
        Upload::Length(n) => {
            head.extend_from_slice(b"content-length: ");
            head.extend_from_slice(n.to_string().as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        Upload::Chunked => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// The rest of a request body, sent while the response is read.
trait PendingBody<S>: Send {
    fn poll_send(&mut self, cx: &mut Context<'_>, io: &mut S) -> Poll<Result<(), Error>>;
}

impl<B, S> PendingBody<S> for BodySender<B>
where
    B: Body<Data = Bytes> + Unpin + Send,
    B::Error: Into<BoxError>,
    S: Io,
{
    fn poll_send(&mut self, cx: &mut Context<'_>, io: &mut S) -> Poll<Result<(), Error>> {
        BodySender::poll_send(self, cx, io)
    }
}

/// Writes the head and the body of one request, a piece at a time.
struct BodySender<B> {
    /// What is to be written before the next piece of the body is asked for.
    pending: Vec<Bytes>,
    body: Option<B>,
    upload: Upload,
    /// Body bytes still owed under `Content-Length`.
    remaining: u64,
    done: bool,
    /// Whether writing to the upstream failed.
    broken: bool,
}

impl<B> BodySender<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    fn new(head: Vec<u8>, body: B, upload: Upload) -> BodySender<B> {
        let remaining = match upload {
            Upload::Length(n) => n,
            _ => 0,
        };
        BodySender {
            pending: vec![Bytes::from(head)],
            body: Some(body),
            upload,
            remaining,
            done: false,
            broken: false,
        }
    }

    fn poll_send<S: Io>(&mut self, cx: &mut Context<'_>, io: &mut S) -> Poll<Result<(), Error>> {
        loop {
            // Write out what is queued.
            while let Some(first) = self.pending.first_mut() {
                if first.is_empty() {
                    self.pending.remove(0);
                    continue;
                }
                let n = ready!(Pin::new(&mut *io).poll_write(cx, first))?;
                if n == 0 {
                    return Poll::Ready(Err(Error::Io(io::ErrorKind::WriteZero.into())));
                }
                let _ = first.split_to(n);
            }
            let Some(body) = self.body.as_mut() else {
                ready!(Pin::new(&mut *io).poll_flush(cx))?;
                return Poll::Ready(Ok(()));
            };
            match ready!(Pin::new(body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.queue_data(data)?,
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            self.finish(Some(trailers))?;
                        }
                    }
                },
                Some(Err(e)) => return Poll::Ready(Err(Error::Body(e.into()))),
                None => self.finish(None)?,
            }
            if self.pending.is_empty() && self.body.is_some() {
                continue;
            }
            // Flush each piece so a slow body still reaches the upstream as it comes.
            ready!(Pin::new(&mut *io).poll_flush(cx))?;
        }
    }

    fn queue_data(&mut self, data: Bytes) -> Result<(), Error> {
        if data.is_empty() {
            return Ok(());
        }
        match self.upload {
            Upload::Chunked => {
                self.pending
                    .push(Bytes::from(format!("{:x}\r\n", data.len()).into_bytes()));
                self.pending.push(data);
                self.pending.push(Bytes::from_static(b"\r\n"));
            }
            _ => {
                let len = data.len() as u64;
                if len > self.remaining {
                    return Err(Error::Body(
                        "the request body is longer than its Content-Length".into(),
                    ));
                }
                self.remaining -= len;
                self.pending.push(data);
            }
        }
        Ok(())
    }

    fn finish(&mut self, trailers: Option<HeaderMap>) -> Result<(), Error> {
        self.body = None;
        match self.upload {
            Upload::Chunked => {
                let mut end = b"0\r\n".to_vec();
                for (name, value) in trailers.iter().flatten() {
                    end.extend_from_slice(name.as_str().as_bytes());
                    end.extend_from_slice(b": ");
                    end.extend_from_slice(value.as_bytes());
                    end.extend_from_slice(b"\r\n");
                }
                end.extend_from_slice(b"\r\n");
                self.pending.push(Bytes::from(end));
                Ok(())
            }
            _ if self.remaining > 0 => Err(Error::Body(
                "the request body is shorter than its Content-Length".into(),
            )),
            _ => Ok(()),
        }
    }
}

enum Parsed {
    Interim,
    Final(http::response::Parts, Framing, bool),
}

/// Parse a response head from the start of `buf`; on success it is taken off `buf`. `None`: incomplete.
fn parse_head(buf: &mut BytesMut, method_head: bool) -> Result<Option<Parsed>, Error> {
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let config = httparse::ParserConfig::default();
    let len = match config.parse_response_with_uninit_headers(&mut response, buf, &mut fields) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Error::Parse(e)),
    };
    let code = response.code.unwrap_or(0);
    let version = match response.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let base = buf.as_ptr() as usize;
    let mut spans: Vec<(Range<usize>, Range<usize>)> = Vec::with_capacity(response.headers.len());
    for field in response.headers.iter() {
        let name = field.name.as_ptr() as usize - base;
        let value = field.value.as_ptr() as usize - base;
        spans.push((
            name..name + field.name.len(),
            value..value + field.value.len(),
        ));
    }
    let head = buf.split_to(len).freeze();
    if (100..200).contains(&code) && code != 101 {
        return Ok(Some(Parsed::Interim));
    }
    let status = StatusCode::from_u16(code).map_err(|_| Error::Invalid("bad status code"))?;
    let mut headers = HeaderMap::with_capacity(spans.len());
    for (name, value) in spans {
        let name =
            HeaderName::from_bytes(&head[name]).map_err(|_| Error::Invalid("bad field name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(value))
            .map_err(|_| Error::Invalid("bad field value"))?;
        headers.append(name, value);
    }
    let (framing, keep_alive) = framing(&headers, status, version, method_head)?;
    let mut parts = Response::new(()).into_parts().0;
    parts.status = status;
    parts.version = version;
    parts.headers = headers;
    Ok(Some(Parsed::Final(parts, framing, keep_alive)))
}

/// RFC 9112, section 6.3, and whether the connection may carry another request (section 9.3).
fn framing(
    headers: &HeaderMap,
    status: StatusCode,
    version: Version,
    method_head: bool,
) -> Result<(Framing, bool), Error> {
    let mut close = false;
    let mut keep_alive = false;
    for value in headers.get_all(header::CONNECTION) {
        for token in value.as_bytes().split(|&b| b == b',') {
            let token = token.trim_ascii();
            close |= token.eq_ignore_ascii_case(b"close");
            keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
        }
    }
    let persistent = if version == Version::HTTP_10 {
        keep_alive && !close
    } else {
        !close
    };
    if method_head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((Framing::Empty, persistent));
    }
    let te = headers.get_all(header::TRANSFER_ENCODING);
    if te.iter().next().is_some() {
        if version == Version::HTTP_10 {
            return Err(Error::Invalid("Transfer-Encoding in an HTTP/1.0 response"));
        }
        if headers.contains_key(header::CONTENT_LENGTH) {
            return Err(Error::Invalid(
                "both Transfer-Encoding and Content-Length in a response",
            ));
        }
        let last = te
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .rfind(|t| !t.is_empty());
        return Ok(match last {
            Some(t) if t.eq_ignore_ascii_case(b"chunked") => (Framing::Chunked, persistent),
            _ => (Framing::UntilClose, false),
        });
    }
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for item in value.as_bytes().split(|&b| b == b',') {
            let n = parse_decimal(item.trim_ascii()).ok_or(Error::Invalid("bad Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(Error::Invalid("conflicting Content-Length values"));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(0) => (Framing::Empty, persistent),
        Some(n) => (Framing::Length(n), persistent),
        None => (Framing::UntilClose, false),
    })
}

fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// Where the reading of a response body stands.
#[derive(Debug, PartialEq, Eq)]
enum State {
    /// Bytes still to come under `Content-Length`.
    Length(u64),
    Chunked(Chunk),
    UntilClose,
    Done,
}

#[derive(Debug, PartialEq, Eq)]
enum Chunk {
    /// At a chunk-size line.
    Size,
    /// Inside a chunk, this many bytes to go.
    Data(u64),
    /// At the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields, then an empty line.
    Trailers,
}

/// The body of an upstream response, read from its connection as the client takes it.
pub struct ResponseBody<S> {
    conn: Option<Connection<S>>,
    state: State,
    /// Whether the connection may carry another exchange once this body has ended.
    keep_alive: bool,
    /// Whether the response switched protocols: the connection is for `into_upgraded`.
    upgrade: bool,
    /// The part of the request body not sent yet when the response head came.
    upload: Option<Box<dyn PendingBody<S>>>,
}

impl<S: Io> ResponseBody<S> {
    /// The connection, once the body has been read exactly to its end and the connection may carry
    /// another exchange; its buffer is released.
    pub fn take_reusable(&mut self) -> Option<Connection<S>> {
        if self.state != State::Done || !self.keep_alive || self.upgrade || self.upload.is_some() {
            return None;
        }
        let mut conn = self.conn.take()?;
        if !conn.buf.is_empty() {
            // Bytes nobody asked for: the upstream is out of step.
            return None;
        }
        conn.buf = BytesMut::new();
        conn.reused = true;
        Some(conn)
    }

    /// The stream of a `101 Switching Protocols` response and the bytes already read from it.
    pub fn take_upgraded(&mut self) -> Option<(S, Bytes)> {
        if !self.upgrade {
            return None;
        }
        self.conn.take().map(Connection::into_upgraded)
    }

    fn fail(&mut self, e: Error) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        self.conn = None;
        self.state = State::Done;
        Poll::Ready(Some(Err(e)))
    }
}

impl<S: Io> Body for ResponseBody<S> {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        loop {
            if this.upgrade {
                return Poll::Ready(None);
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            if let Some(upload) = this.upload.as_mut() {
                match upload.poll_send(cx, &mut conn.io) {
                    Poll::Ready(Ok(())) => this.upload = None,
                    // The request cannot be completed: neither can the exchange.
                    Poll::Ready(Err(e @ Error::Body(_))) => {
                        this.upload = None;
                        return this.fail(e);
                    }
                    // The upstream stopped reading; its answer may still be coming.
                    Poll::Ready(Err(_)) => {
                        this.upload = None;
                        this.keep_alive = false;
                    }
                    Poll::Pending => {}
                }
            }
            match &mut this.state {
                State::Done => return Poll::Ready(None),
                State::Length(remaining) => {
                    if !conn.buf.is_empty() {
                        let n = usize::try_from(*remaining)
                            .unwrap_or(usize::MAX)
                            .min(conn.buf.len());
                        let data = conn.buf.split_to(n).freeze();
                        *remaining -= n as u64;
                        if *remaining == 0 {
                            this.state = State::Done;
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    let want = usize::try_from(*remaining)
                        .unwrap_or(usize::MAX)
                        .min(BODY_READ);
                    match ready!(poll_read(&mut conn.io, &mut conn.buf, want, cx)) {
                        Ok(0) => return this.fail(Error::Closed("before the end of the body")),
                        Ok(_) => {}
                        Err(e) => return this.fail(Error::Io(e)),
                    }
                }
                State::UntilClose => {
                    if !conn.buf.is_empty() {
                        let data = conn.buf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    match ready!(poll_read(&mut conn.io, &mut conn.buf, BODY_READ, cx)) {
                        Ok(0) => {
                            this.state = State::Done;
                            this.conn = None;
                            return Poll::Ready(None);
                        }
                        Ok(_) => {}
                        Err(e) => return this.fail(Error::Io(e)),
                    }
                }
                State::Chunked(chunk) => match step_chunked(chunk, &mut conn.buf) {
                    Ok(Step::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Step::Trailers(trailers)) => {
                        this.state = State::Done;
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    Ok(Step::End) => {
                        this.state = State::Done;
                        return Poll::Ready(None);
                    }
                    Ok(Step::Again) => {}
                    Ok(Step::More) => {
                        match ready!(poll_read(&mut conn.io, &mut conn.buf, BODY_READ, cx)) {
                            Ok(0) => return this.fail(Error::Closed("before the end of the body")),
                            Ok(_) => {}
                            Err(e) => return this.fail(Error::Io(e)),
                        }
                    }
                    Err(e) => return this.fail(e),
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state == State::Done || self.upgrade
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// What one step through a chunked body found.
enum Step {
    Data(Bytes),
    Trailers(HeaderMap),
    End,
    /// Moved on; look again.
    Again,
    /// Needs more bytes.
    More,
}

/// One step of RFC 9112, section 7.1, over the bytes in `buf`.
fn step_chunked(chunk: &mut Chunk, buf: &mut BytesMut) -> Result<Step, Error> {
    match chunk {
        Chunk::Size => {
            let Some(end) = memchr::memchr(b'\n', buf) else {
                return if buf.len() > MAX_CHUNK_LINE {
                    Err(Error::Invalid("chunk-size line too long"))
                } else {
                    Ok(Step::More)
                };
            };
            if end > MAX_CHUNK_LINE {
                return Err(Error::Invalid("chunk-size line too long"));
            }
            let line = buf.split_to(end + 1);
            let size = parse_chunk_size(&line)?;
            *chunk = if size == 0 {
                Chunk::Trailers
            } else {
                Chunk::Data(size)
            };
            Ok(Step::Again)
        }
        Chunk::Data(remaining) => {
            if buf.is_empty() {
                return Ok(Step::More);
            }
            let n = usize::try_from(*remaining)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let data = buf.split_to(n).freeze();
            *remaining -= n as u64;
            if *remaining == 0 {
                *chunk = Chunk::DataEnd;
            }
            Ok(Step::Data(data))
        }
        Chunk::DataEnd => {
            if buf.len() < 2 {
                return Ok(Step::More);
            }
            if &buf[..2] != b"\r\n" {
                return Err(Error::Invalid("chunk data not followed by CRLF"));
            }
            let _ = buf.split_to(2);
            *chunk = Chunk::Size;
            Ok(Step::Again)
        }
        Chunk::Trailers => {
            // The whole trailer section at once: up to and with the empty line.
            let Some(end) = find_section_end(buf) else {
                return if buf.len() > MAX_HEAD {
                    Err(Error::Invalid("trailer section too large"))
                } else {
                    Ok(Step::More)
                };
            };
            let section = buf.split_to(end).freeze();
            if section.len() == 2 {
                return Ok(Step::End);
            }
            let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let parsed = match httparse::parse_headers(&section, &mut fields) {
                Ok(httparse::Status::Complete((_, parsed))) => parsed,
                Ok(httparse::Status::Partial) => {
                    return Err(Error::Invalid("incomplete trailer section"))
                }
                Err(e) => return Err(Error::Parse(e)),
            };
            let mut trailers = HeaderMap::with_capacity(parsed.len());
            for field in parsed {
                let name = HeaderName::from_bytes(field.name.as_bytes())
                    .map_err(|_| Error::Invalid("bad trailer field name"))?;
                let value = HeaderValue::from_bytes(field.value)
                    .map_err(|_| Error::Invalid("bad trailer field value"))?;
                trailers.append(name, value);
            }
            Ok(Step::Trailers(trailers))
        }
    }
}

/// The end of a field section starting at `buf[0]`: the index just past its empty line.
fn find_section_end(buf: &[u8]) -> Option<usize> {
    if buf.starts_with(b"\r\n") {
        return Some(2);
    }
    memchr::memmem::find(buf, b"\r\n\r\n").map(|i| i + 4)
}

/// `chunk-size [ chunk-ext ] CRLF`: hexadecimal digits, optionally whitespace and `;` extensions
/// (ignored), then CRLF.
fn parse_chunk_size(line: &[u8]) -> Result<u64, Error> {
    let line = line
        .strip_suffix(b"\r\n")
        .ok_or(Error::Invalid("chunk-size line not ended by CRLF"))?;
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(Error::Invalid("bad chunk size"));
    }
    let rest = &line[digits..];
    let rest = rest.trim_ascii_start();
    if !rest.is_empty() && rest[0] != b';' {
        return Err(Error::Invalid("bad chunk size"));
    }
    if rest.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(Error::Invalid("bad chunk extension"));
    }
    let text =
        std::str::from_utf8(&line[..digits]).map_err(|_| Error::Invalid("bad chunk size"))?;
    u64::from_str_radix(text, 16).map_err(|_| Error::Invalid("bad chunk size"))
}

#[cfg(test)]
mod tests;
