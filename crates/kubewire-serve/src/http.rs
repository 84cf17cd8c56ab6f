//! The HTTP endpoints.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use http::{Method, Response, StatusCode, Uri};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::command::client_addr;
use crate::{ServeError, Shared};

/// A client that has not sent its request headers by then is dropped.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

const INDEX: &str = "kubewire serve: a test server in the spirit of agnhost netexec\n\
\n\
GET  /hostname           the pod name\n\
GET  /clientip           the client's IP:PORT\n\
GET  /echo?msg=M[&code=N] M, with status N (default 200)\n\
GET  /healthz            200 ok\n\
GET  /readyz             200 ok, or 503 after POST /readyz?fail=true\n\
POST /readyz?fail=B      B=true makes /readyz fail, B=false heals it\n";

/// Accepts on `listener` and serves every connection, forever.
pub(crate) async fn serve(
    listener: TcpListener,
    addr: SocketAddr,
    shared: Arc<Shared>,
) -> Result<(), ServeError> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let builder = builder.clone();
                    let shared = Arc::clone(&shared);
                    conns.spawn(async move {
                        let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                            let response = handle(req.method(), req.uri(), peer, &shared);
                            async move { Ok::<_, Infallible>(response) }
                        });
                        if let Err(e) = builder.serve_connection(TokioIo::new(stream), service).await {
                            tracing::debug!(%peer, "HTTP connection: {e}");
                        }
                    });
                }
                Err(e) => {
                    // Out of descriptors or memory, or the peer gave up: wait a little.
                    tracing::warn!(%addr, "HTTP accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// The answer to one request; any method is accepted except where noted, like agnhost.
pub(crate) fn handle(
    method: &Method,
    uri: &Uri,
    peer: SocketAddr,
    shared: &Shared,
) -> Response<Full<Bytes>> {
    match uri.path() {
        "/" => text(StatusCode::OK, INDEX),
        // `/hostName` is agnhost's older spelling.
        "/hostname" | "/hostName" => text(StatusCode::OK, shared.name.clone()),
        "/clientip" => text(StatusCode::OK, client_addr(peer).to_string()),
        "/echo" => echo(uri),
        "/healthz" => text(StatusCode::OK, "ok"),
        "/readyz" => readyz(method, uri, shared),
        _ => text(StatusCode::NOT_FOUND, "404 page not found\n"),
    }
}

fn query_param(uri: &Uri, key: &str) -> Option<String> {
    let query = uri.query()?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

fn echo(uri: &Uri) -> Response<Full<Bytes>> {
    let msg = query_param(uri, "msg").unwrap_or_default();
    let status = match query_param(uri, "code").filter(|c| !c.is_empty()) {
        None => StatusCode::OK,
        Some(code) => match code.parse::<u16>().ok().filter(|c| (200..=599).contains(c)) {
            Some(code) => StatusCode::from_u16(code).unwrap_or(StatusCode::OK),
            None => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("argument 'code' must be an integer in 200..=599, got {code:?}\n"),
                );
            }
        },
    };
    text(status, msg)
}

fn readyz(method: &Method, uri: &Uri, shared: &Shared) -> Response<Full<Bytes>> {
    match *method {
        Method::GET | Method::HEAD => {
            if shared.ready.load(Ordering::SeqCst) {
                text(StatusCode::OK, "ok")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready")
            }
        }
        Method::POST => match query_param(uri, "fail").as_deref() {
            Some("true") => {
                shared.ready.store(false, Ordering::SeqCst);
                text(StatusCode::OK, "readyz now fails\n")
            }
            Some("false") => {
                shared.ready.store(true, Ordering::SeqCst);
                text(StatusCode::OK, "readyz now succeeds\n")
            }
            _ => text(
                StatusCode::BAD_REQUEST,
                "POST /readyz needs fail=true or fail=false\n",
            ),
        },
        _ => {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "use GET, HEAD or POST\n");
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD, POST"));
            response
        }
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;

    fn shared() -> Shared {
        Shared {
            name: "web-0".into(),
            ready: AtomicBool::new(true),
        }
    }

    fn get(path: &str, shared: &Shared) -> (StatusCode, Bytes) {
        call(&Method::GET, path, shared)
    }

    fn call(method: &Method, path: &str, shared: &Shared) -> (StatusCode, Bytes) {
        use http_body_util::BodyExt;
        let uri: Uri = path.parse().expect("uri");
        let peer: SocketAddr = "[::ffff:192.0.2.1]:5000".parse().expect("peer");
        let response = handle(method, &uri, peer, shared);
        let status = response.status();
        let body = futures_lite_block_on(response.into_body().collect()).to_bytes();
        (status, body)
    }

    /// `Full` is ready at once; poll it without a runtime.
    fn futures_lite_block_on<F: std::future::Future<Output = Result<T, Infallible>>, T>(f: F) -> T {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut f = std::pin::pin!(f);
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(Ok(v)) => v,
            std::task::Poll::Ready(Err(e)) => match e {},
            std::task::Poll::Pending => panic!("a Full body was not ready"),
        }
    }

    #[test]
    fn endpoints() {
        let s = shared();
        assert_eq!(get("/hostname", &s), (StatusCode::OK, Bytes::from("web-0")));
        assert_eq!(
            get("/clientip", &s),
            (StatusCode::OK, Bytes::from("192.0.2.1:5000"))
        );
        assert_eq!(
            get("/echo?msg=hello%20world&x=1", &s),
            (StatusCode::OK, Bytes::from("hello world"))
        );
        assert_eq!(get("/echo", &s), (StatusCode::OK, Bytes::new()));
        assert_eq!(get("/echo?msg=x&code=418", &s).0, StatusCode::IM_A_TEAPOT);
        assert_eq!(get("/echo?msg=x&code=abc", &s).0, StatusCode::BAD_REQUEST);
        assert_eq!(get("/echo?msg=x&code=99999", &s).0, StatusCode::BAD_REQUEST);
        assert_eq!(get("/echo?msg=%ff%fe", &s).0, StatusCode::OK);
        assert_eq!(get("/healthz", &s), (StatusCode::OK, Bytes::from("ok")));
        assert_eq!(get("/nope", &s).0, StatusCode::NOT_FOUND);
        assert!(get("/", &s).1.starts_with(b"kubewire serve"));
    }

    #[test]
    fn readyz_toggles() {
        let s = shared();
        assert_eq!(get("/readyz", &s).0, StatusCode::OK);
        assert_eq!(
            call(&Method::POST, "/readyz?fail=true", &s).0,
            StatusCode::OK
        );
        assert_eq!(get("/readyz", &s).0, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(get("/healthz", &s).0, StatusCode::OK);
        assert_eq!(
            call(&Method::POST, "/readyz?fail=maybe", &s).0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(get("/readyz", &s).0, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            call(&Method::POST, "/readyz?fail=false", &s).0,
            StatusCode::OK
        );
        assert_eq!(get("/readyz", &s).0, StatusCode::OK);
        assert_eq!(
            call(&Method::DELETE, "/readyz", &s).0,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
