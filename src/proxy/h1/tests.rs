//! The HTTP/1.1 upstream client against scripted upstreams on loopback: each test's upstream reads the
//! request as raw bytes and answers with exact bytes, so framing is checked on the wire.

use super::*;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use proptest::prelude::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

/// A request body given in pieces.
type Pieces =
    StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, BoxError>>>>;

fn pieces(parts: &[&'static [u8]]) -> Pieces {
    let frames: Vec<Result<Frame<Bytes>, BoxError>> = parts
        .iter()
        .map(|p| Ok(Frame::data(Bytes::from_static(p))))
        .collect();
    StreamBody::new(futures_util::stream::iter(frames))
}

fn get(path: &str) -> Request<Empty<Bytes>> {
    Request::builder()
        .uri(path)
        .header("host", "upstream.test")
        .body(Empty::new())
        .unwrap()
}

/// Read one request head (through the empty line) from `stream`, byte by byte so nothing past it is
/// taken.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        if stream.read(&mut byte).await.unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

/// An upstream that serves one connection: for each entry, reads a request head and writes the answer;
/// then closes (or, with `hold`, keeps the connection open until the test ends). Returns the heads seen.
async fn upstream(
    answers: Vec<&'static [u8]>,
    hold: bool,
) -> (SocketAddr, tokio::task::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut heads = Vec::new();
        for answer in answers {
            heads.push(read_head(&mut stream).await);
            stream.write_all(answer).await.unwrap();
        }
        if hold {
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest).await;
        }
        heads
    });
    (addr, task)
}

use std::net::SocketAddr;

async fn connect(addr: SocketAddr) -> Connection<TcpStream> {
    Connection::new(TcpStream::connect(addr).await.unwrap())
}

async fn send<B>(conn: Connection<TcpStream>, req: Request<B>) -> Response<ResponseBody<TcpStream>>
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    match conn.send(req).await {
        Ok(response) => response,
        Err(SendError::Retry(_, e) | SendError::Failed(e)) => panic!("exchange failed: {e}"),
    }
}

async fn send_err<B>(conn: Connection<TcpStream>, req: Request<B>) -> String
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    match conn.send(req).await {
        Ok(response) => panic!("expected a failure, got {}", response.status()),
        Err(SendError::Retry(_, e) | SendError::Failed(e)) => e.to_string(),
    }
}

/// Read a body to its end: the data, the trailers, and the connection if it may be reused.
async fn drain(
    mut body: ResponseBody<TcpStream>,
) -> (Vec<u8>, Option<HeaderMap>, Option<Connection<TcpStream>>) {
    let mut data = Vec::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.unwrap();
        match frame.into_data() {
            Ok(d) => data.extend_from_slice(&d),
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    (data, trailers, body.take_reusable())
}

/// `GET /` on a new connection to an upstream that gives `answer` (see [`upstream`] for `hold`), read
/// to its end: the body, and the connection if it may be reused.
async fn answered(answer: &'static [u8], hold: bool) -> (Vec<u8>, Option<Connection<TcpStream>>) {
    let (addr, _task) = upstream(vec![answer], hold).await;
    let (data, _, conn) = drain(send(connect(addr).await, get("/")).await.into_body()).await;
    (data, conn)
}

#[tokio::test]
async fn a_content_length_response_is_read_and_the_connection_reused() {
    let (addr, task) = upstream(
        vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello",
            b"HTTP/1.1 201 Created\r\ncontent-length: 3\r\n\r\nbye",
        ],
        true,
    )
    .await;
    let response = send(connect(addr).await, get("/one?x=1")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-a"], "1");
    assert_eq!(response.body().size_hint().exact(), Some(5));
    let (data, _, conn) = drain(response.into_body()).await;
    assert_eq!(data, b"hello");
    let mut conn = conn.expect("reusable");
    assert!(conn.is_usable());
    let response = send(conn, get("/two")).await;
    assert_eq!(response.status(), 201);
    let (data, _, conn) = drain(response.into_body()).await;
    assert_eq!(data, b"bye");
    assert!(conn.is_some());
    drop(conn);
    let heads = task.await.unwrap();
    assert_eq!(
        heads[0],
        "GET /one?x=1 HTTP/1.1\r\nhost: upstream.test\r\n\r\n"
    );
    assert!(heads[1].starts_with("GET /two HTTP/1.1\r\n"));
}

#[tokio::test]
async fn a_chunked_response_is_decoded_with_extensions_and_trailers() {
    let (addr, _task) = upstream(
        vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n1 ; x\r\n \r\n6\r\nworld!\r\n0\r\nX-Checksum: abc\r\n\r\n",
        ],
        true,
    )
    .await;
    let response = send(connect(addr).await, get("/")).await;
    let (data, trailers, conn) = drain(response.into_body()).await;
    assert_eq!(data, b"hello world!");
    assert_eq!(trailers.unwrap()["x-checksum"], "abc");
    assert!(
        conn.is_some(),
        "a chunked message read to its end leaves the connection usable"
    );
}

#[tokio::test]
async fn a_response_without_length_is_read_until_close_and_not_reused() {
    let (addr, _task) = upstream(
        vec![b"HTTP/1.1 200 OK\r\nX: y\r\n\r\neverything until the end"],
        false,
    )
    .await;
    let response = send(connect(addr).await, get("/")).await;
    let (data, _, conn) = drain(response.into_body()).await;
    assert_eq!(data, b"everything until the end");
    assert!(conn.is_none());
}

#[tokio::test]
async fn head_204_and_304_have_no_content_whatever_their_fields_say() {
    let (addr, _task) = upstream(
        vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n",
            b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ],
        true,
    )
    .await;
    let head = Request::head("/").body(Empty::<Bytes>::new()).unwrap();
    let response = send(connect(addr).await, head).await;
    assert_eq!(response.headers()["content-length"], "1000");
    assert!(response.body().is_end_stream());
    let (_, _, conn) = drain(response.into_body()).await;
    let response = send(conn.unwrap(), get("/")).await;
    assert_eq!(response.status(), 204);
    let (data, _, conn) = drain(response.into_body()).await;
    assert!(data.is_empty());
    let response = send(conn.unwrap(), get("/")).await;
    assert_eq!(response.status(), 304);
    let (_, _, conn) = drain(response.into_body()).await;
    let response = send(conn.unwrap(), get("/")).await;
    let (data, _, _) = drain(response.into_body()).await;
    assert_eq!(
        data, b"ok",
        "the connection stayed in step through the bodiless answers"
    );
}

#[tokio::test]
async fn interim_responses_are_dropped() {
    let (addr, _task) = upstream(
        vec![b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"],
        true,
    )
    .await;
    let response = send(connect(addr).await, get("/")).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("link").is_none());
    let (data, _, conn) = drain(response.into_body()).await;
    assert_eq!(data, b"ok");
    assert!(conn.is_some());
}

#[tokio::test]
async fn framing_conflicts_and_bad_lengths_are_refused() {
    let cases: [(&'static [u8], &str); 7] = [
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            "both Transfer-Encoding and Content-Length",
        ),
        (
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            "Transfer-Encoding in an HTTP/1.0 response",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "conflicting Content-Length",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
            "conflicting Content-Length",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            "bad Content-Length",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n",
            "bad Content-Length",
        ),
        (
            b"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n",
            "invalid response head",
        ),
    ];
    for (answer, expected) in cases {
        let (addr, _task) = upstream(vec![answer], true).await;
        let error = send_err(connect(addr).await, get("/")).await;
        assert!(
            error.contains(expected),
            "{error:?} for {:?}",
            String::from_utf8_lossy(answer)
        );
    }
    // Repeated equal values are one length.
    let (data, conn) = answered(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\nok",
        true,
    )
    .await;
    assert_eq!(data, b"ok");
    assert!(conn.is_some());
}

#[tokio::test]
async fn a_transfer_coding_not_ending_in_chunked_is_read_until_close() {
    let (data, conn) = answered(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nraw bytes",
        false,
    )
    .await;
    assert_eq!(data, b"raw bytes");
    assert!(conn.is_none());
}

#[tokio::test]
async fn keep_alive_follows_version_and_connection() {
    let cases: [(&'static [u8], bool); 5] = [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", true),
        (
            b"HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 1\r\n\r\nx",
            false,
        ),
        (
            b"HTTP/1.1 200 OK\r\nConnection: x-a, close\r\nContent-Length: 1\r\n\r\nx",
            false,
        ),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", false),
        (
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx",
            true,
        ),
    ];
    for (answer, reusable) in cases {
        let (addr, _task) = upstream(vec![answer], true).await;
        let response = send(connect(addr).await, get("/")).await;
        let (data, _, conn) = drain(response.into_body()).await;
        assert_eq!(data, b"x");
        assert_eq!(
            conn.is_some(),
            reusable,
            "{}",
            String::from_utf8_lossy(answer)
        );
    }
}

#[tokio::test]
async fn bytes_after_the_body_make_the_connection_unusable() {
    let (data, conn) = answered(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxHTTP/1.1 200 OK\r\n",
        true,
    )
    .await;
    assert_eq!(data, b"x");
    assert!(conn.is_none());
}

#[tokio::test]
async fn malformed_chunked_bodies_fail() {
    let cases: [&'static [u8]; 5] = [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n11111111111111111\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
    ];
    for answer in cases {
        let (addr, _task) = upstream(vec![answer], false).await;
        let mut body = send(connect(addr).await, get("/")).await.into_body();
        let mut failed = false;
        while let Some(frame) = body.frame().await {
            if frame.is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed, "{}", String::from_utf8_lossy(answer));
        assert!(body.take_reusable().is_none());
    }
}

#[tokio::test]
async fn a_long_chunk_line_or_head_is_refused() {
    let mut long_line = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;".to_vec();
    long_line.extend(std::iter::repeat_n(b'a', MAX_CHUNK_LINE + 10));
    let long_line: &'static [u8] = Box::leak(long_line.into_boxed_slice());
    let (addr, _task) = upstream(vec![long_line], true).await;
    let mut body = send(connect(addr).await, get("/")).await.into_body();
    let error = body.frame().await.unwrap().unwrap_err().to_string();
    assert!(error.contains("chunk-size line too long"), "{error}");

    let mut big = b"HTTP/1.1 200 OK\r\n".to_vec();
    while big.len() <= MAX_HEAD {
        big.extend_from_slice(b"X-Filler: 0123456789012345678901234567890123456789\r\n");
    }
    let big: &'static [u8] = Box::leak(big.into_boxed_slice());
    let (addr, _task) = upstream(vec![big], true).await;
    let error = send_err(connect(addr).await, get("/")).await;
    assert!(
        error.contains("too large") || error.contains("too many"),
        "{error}"
    );

    let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..=MAX_HEADERS {
        many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let many: &'static [u8] = Box::leak(many.into_boxed_slice());
    let (addr, _task) = upstream(vec![many], true).await;
    let error = send_err(connect(addr).await, get("/")).await;
    assert!(error.contains("invalid response head"), "{error}");
}

#[tokio::test]
async fn a_truncated_body_is_an_error() {
    let (addr, _task) = upstream(
        vec![b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf"],
        false,
    )
    .await;
    let mut body = send(connect(addr).await, get("/")).await.into_body();
    assert_eq!(
        body.frame().await.unwrap().unwrap().into_data().unwrap(),
        "half"
    );
    let error = body.frame().await.unwrap().unwrap_err().to_string();
    assert!(error.contains("before the end of the body"), "{error}");
}

/// An upstream that reads one request head, then the body framed as the head says (raw), answers 200,
/// and reports what it read.
async fn body_reader() -> (SocketAddr, tokio::task::JoinHandle<(String, Vec<u8>)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let head = read_head(&mut stream).await;
        let lower = head.to_ascii_lowercase();
        let mut raw = Vec::new();
        if let Some(at) = lower.find("content-length: ") {
            let n: usize = lower[at + 16..]
                .split("\r\n")
                .next()
                .unwrap()
                .parse()
                .unwrap();
            raw.resize(n, 0);
            stream.read_exact(&mut raw).await.unwrap();
        } else if lower.contains("transfer-encoding: chunked") {
            while !raw.ends_with(b"0\r\n\r\n") && !raw.ends_with(b"\r\n0\r\nx-sum: 9\r\n\r\n") {
                let mut byte = [0u8; 1];
                if stream.read(&mut byte).await.unwrap() == 0 {
                    break;
                }
                raw.push(byte[0]);
            }
        }
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .await
            .unwrap();
        (head, raw)
    });
    (addr, task)
}

#[tokio::test]
async fn request_bodies_are_framed_by_their_length_or_chunked() {
    // A client's Content-Length is kept (and a Transfer-Encoding it sent is not repeated).
    let (addr, task) = body_reader().await;
    let req = Request::post("/up")
        .header("content-length", "11")
        .header("transfer-encoding", "chunked")
        .body(pieces(&[b"hello", b" world"]))
        .unwrap();
    let response = send(connect(addr).await, req).await;
    assert_eq!(response.status(), 200);
    let (head, raw) = task.await.unwrap();
    assert!(head.contains("content-length: 11\r\n"), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
    assert_eq!(raw, b"hello world");

    // Without a length: chunked, each piece its own chunk.
    let (addr, task) = body_reader().await;
    let req = Request::post("/up")
        .body(pieces(&[b"hello", b"", b" world"]))
        .unwrap();
    let response = send(connect(addr).await, req).await;
    assert_eq!(response.status(), 200);
    let (head, raw) = task.await.unwrap();
    assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
    assert_eq!(raw, b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");

    // An exact size without the header: Content-Length.
    let (addr, task) = body_reader().await;
    let req = Request::put("/up")
        .body(Full::new(Bytes::from_static(b"abc")))
        .unwrap();
    send(connect(addr).await, req).await;
    let (head, raw) = task.await.unwrap();
    assert!(head.contains("content-length: 3\r\n"), "{head}");
    assert_eq!(raw, b"abc");

    // No body on a POST: an explicit zero.
    let (addr, task) = body_reader().await;
    let req = Request::post("/up").body(Empty::<Bytes>::new()).unwrap();
    send(connect(addr).await, req).await;
    let (head, _) = task.await.unwrap();
    assert!(head.contains("content-length: 0\r\n"), "{head}");
}

#[tokio::test]
async fn request_trailers_follow_the_last_chunk() {
    let (addr, task) = body_reader().await;
    let mut trailers = HeaderMap::new();
    trailers.insert("x-sum", HeaderValue::from_static("9"));
    let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
        Ok(Frame::data(Bytes::from_static(b"abc"))),
        Ok(Frame::trailers(trailers)),
    ];
    let req = Request::post("/up")
        .body(StreamBody::new(futures_util::stream::iter(frames)))
        .unwrap();
    send(connect(addr).await, req).await;
    let (_, raw) = task.await.unwrap();
    assert_eq!(raw, b"3\r\nabc\r\n0\r\nx-sum: 9\r\n\r\n");
}

#[tokio::test]
async fn a_body_shorter_or_longer_than_its_length_is_the_clients_fault() {
    for (length, body) in [
        ("10", &[b"short" as &[u8]][..]),
        ("2", &[b"too long" as &[u8]][..]),
    ] {
        let (addr, _task) = upstream(vec![], true).await;
        let pieces: Vec<&'static [u8]> = body
            .iter()
            .map(|p| &*Box::leak(p.to_vec().into_boxed_slice()))
            .collect();
        let req = Request::post("/up")
            .header("content-length", length)
            .body(super::tests::pieces(&pieces))
            .unwrap();
        match connect(addr).await.send(req).await {
            Err(SendError::Failed(e)) => assert!(e.is_request_body(), "{e}"),
            Err(SendError::Retry(..)) => panic!("a body is never sent twice"),
            Ok(r) => panic!("sent anyway: {}", r.status()),
        }
    }
}

#[tokio::test]
async fn an_early_answer_comes_back_while_the_body_is_still_being_sent() {
    // The upstream answers 413 after the head and reads nothing more; the body is larger than the
    // socket buffers can hold, so sending all of it first would never finish.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        read_head(&mut stream).await;
        stream
            .write_all(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 3\r\n\r\nbig")
            .await
            .unwrap();
        // Hold the connection without reading until the test is done.
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let chunk = Bytes::from(vec![b'x'; 1 << 20]);
    let frames = (0..256).map(move |_| Ok::<_, BoxError>(Frame::data(chunk.clone())));
    let body = StreamBody::new(futures_util::stream::iter(frames));
    let req = Request::post("/upload")
        .header("content-length", (256u64 << 20).to_string())
        .body(body)
        .unwrap();
    let response = send(connect(addr).await, req).await;
    assert_eq!(response.status(), 413);
    let (data, _, conn) = drain(response.into_body()).await;
    assert_eq!(data, b"big");
    assert!(
        conn.is_none(),
        "a request not sent in full leaves the connection unusable"
    );
    server.abort();
}

use std::time::Duration;

#[tokio::test]
async fn a_reused_connection_closed_by_the_upstream_gives_an_idempotent_request_back() {
    // One answer, then the upstream closes: the connection looks fine until it is used again.
    let (_, conn) = answered(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", false).await;
    let conn = conn.unwrap();
    // Give the close time to arrive, bounded.
    let mut conn = conn;
    for _ in 0..200 {
        if !conn.is_usable() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!conn.is_usable(), "the close is seen on an idle connection");

    let (_, conn) = answered(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", false).await;
    let conn = conn.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    match conn.send(get("/again")).await {
        Err(SendError::Retry(req, _)) => assert_eq!(req.uri(), "/again"),
        Err(SendError::Failed(e)) => panic!("not given back: {e}"),
        Ok(r) => panic!("answered: {}", r.status()),
    }

    let (_, conn) = answered(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", false).await;
    let conn = conn.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let post = Request::post("/again").body(Empty::<Bytes>::new()).unwrap();
    assert!(
        matches!(conn.send(post).await, Err(SendError::Failed(_))),
        "a POST is never sent twice"
    );

    // A first exchange on a new connection is never given back either.
    let (addr, _task) = upstream(vec![], false).await;
    assert!(matches!(
        connect(addr).await.send(get("/")).await,
        Err(SendError::Failed(_))
    ));
}

#[tokio::test]
async fn switching_protocols_hands_over_the_stream_and_early_bytes() {
    let (addr, task) = upstream(
        vec![b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nearly"],
        true,
    )
    .await;
    let req = Request::get("/ws")
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = send(connect(addr).await, req).await;
    assert_eq!(response.status(), 101);
    let mut body = response.into_body();
    assert!(body.is_end_stream());
    let (mut stream, early) = body.take_upgraded().unwrap();
    assert_eq!(early, "early");
    assert!(body.take_reusable().is_none());
    stream.write_all(b"after").await.unwrap();
    stream.shutdown().await.unwrap();
    drop(stream);
    let heads = task.await.unwrap();
    assert!(heads[0].contains("upgrade: websocket\r\n"));
}

#[test]
fn chunk_sizes() {
    assert_eq!(parse_chunk_size(b"0\r\n").unwrap(), 0);
    assert_eq!(parse_chunk_size(b"1aF\r\n").unwrap(), 0x1af);
    assert_eq!(parse_chunk_size(b"5;a=b;c\r\n").unwrap(), 5);
    assert_eq!(parse_chunk_size(b"5 ;a\r\n").unwrap(), 5);
    assert_eq!(parse_chunk_size(b"ffffffffffffffff\r\n").unwrap(), u64::MAX);
    for bad in [
        &b"\r\n"[..],
        b"x\r\n",
        b"5\n",
        b"-5\r\n",
        b"0x5\r\n",
        b"5 6\r\n",
        b"10000000000000000\r\n",
        b"5;\r\r\n",
    ] {
        assert!(
            parse_chunk_size(bad).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

/// Encode `pieces` chunked, then decode them as they arrive cut at `cuts`: the same bytes come out.
fn decode_in_fragments(pieces: &[Vec<u8>], cuts: &[usize]) -> Vec<u8> {
    let mut wire = Vec::new();
    for p in pieces.iter().filter(|p| !p.is_empty()) {
        wire.extend_from_slice(format!("{:X};ext=1\r\n", p.len()).as_bytes());
        wire.extend_from_slice(p);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"0\r\nx-t: 1\r\n\r\n");
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut chunk = Chunk::Size;
    let mut at = 0;
    let mut cuts = cuts.iter().copied();
    loop {
        match step_chunked(&mut chunk, &mut buf).unwrap() {
            Step::Data(d) => out.extend_from_slice(&d),
            Step::Again => {}
            Step::Trailers(_) | Step::End => break,
            Step::More => {
                assert!(at < wire.len(), "ran out of input");
                let n = cuts.next().unwrap_or(wire.len()).clamp(1, wire.len() - at);
                buf.extend_from_slice(&wire[at..at + n]);
                at += n;
            }
        }
    }
    assert!(
        buf.is_empty() && at == wire.len(),
        "the whole message and nothing more"
    );
    out
}

proptest! {
    #[test]
    fn chunked_decoding_does_not_depend_on_how_the_bytes_arrive(
        pieces in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8),
        cuts in proptest::collection::vec(1usize..40, 0..200),
    ) {
        let expected: Vec<u8> = pieces.concat();
        prop_assert_eq!(decode_in_fragments(&pieces, &cuts), expected);
    }
}
