//! The HTTP side: connections (plain or TLS, HTTP/1.1 and HTTP/2), bearer-token authentication,
//! routing of discovery paths, and turning [`Reply`]s into responses (watches as chunked
//! streams).

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::api::{Api, ApiRequest, Reply};
use crate::discovery;
use crate::request::{Target, parse_path};
use crate::status::ApiError;

type Body = BoxBody<Bytes, Infallible>;

/// Largest request body accepted (kube-apiserver's limit is 3 MiB of object; allow headroom).
const MAX_BODY: usize = 8 * 1024 * 1024;

pub struct Http {
    pub api: Arc<Api>,
    pub tokens: Option<HashSet<String>>,
    /// What `/api` reports as the server address.
    pub server_address: String,
}

fn respond(code: u16, body: Bytes, content_type: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(body).boxed());
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn json_response(code: u16, v: &Value) -> Response<Body> {
    respond(code, Bytes::from(v.to_string()), "application/json")
}

fn error_response(e: &ApiError) -> Response<Body> {
    json_response(e.code, &e.to_status())
}

impl Http {
    pub async fn serve(self: Arc<Self>, listener: TcpListener, tls: Option<TlsAcceptor>) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let this = self.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let this = this.clone();
                    async move { Ok::<_, Infallible>(this.handle(req).await) }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let result = match tls {
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(s) => builder.serve_connection(TokioIo::new(s), service).await,
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                    },
                    None => {
                        builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await
                    }
                };
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended");
                }
            });
        }
    }

    fn authorized(&self, req: &Request<Incoming>) -> bool {
        let Some(tokens) = &self.tokens else {
            return true;
        };
        req.headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| tokens.contains(t.trim()))
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let target = parse_path(req.uri().path());
        if target != Some(Target::Health) && !self.authorized(&req) {
            return error_response(&ApiError::unauthorized());
        }
        let reply = match target {
            None => Err(ApiError::path_not_found()),
            Some(Target::Health) => return respond(200, Bytes::from_static(b"ok"), "text/plain"),
            Some(Target::Resource(t)) => self.resource(req, t).await,
            Some(other) => match discovery_document(other, &self.server_address) {
                Some(v) => Ok(Reply::Json {
                    code: 200,
                    body: Bytes::from(v.to_string()),
                    warnings: vec![],
                }),
                None => Err(ApiError::path_not_found()),
            },
        };
        match reply {
            Ok(Reply::Json {
                code,
                body,
                warnings,
            }) => {
                let mut r = respond(code, body, "application/json");
                for w in warnings {
                    if let Ok(v) =
                        HeaderValue::from_str(&format!("299 - \"{}\"", w.replace('"', "'")))
                    {
                        r.headers_mut().append(header::WARNING, v);
                    }
                }
                r
            }
            Ok(Reply::Stream(rx)) => {
                let stream = futures::stream::unfold(rx, |mut rx| async move {
                    rx.recv()
                        .await
                        .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
                });
                let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                r.headers_mut().insert(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("no-cache, private"),
                );
                r
            }
            Err(e) => error_response(&e),
        }
    }

    async fn resource(
        &self,
        req: Request<Incoming>,
        target: crate::request::ResourceTarget,
    ) -> crate::api::ApiResult {
        let method = req.method().clone();
        let query: HashMap<String, String> = req
            .uri()
            .query()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default();
        let header = |name: header::HeaderName| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let content_type = header(header::CONTENT_TYPE);
        let accept = header(header::ACCEPT);
        if let Some(a) = &accept {
            // We speak JSON only; a client that accepts nothing else gets 406, as upstream.
            let acceptable = a.split(',').any(|t| {
                let t = t.trim();
                t.starts_with("application/json")
                    || t.starts_with("*/*")
                    || t.starts_with("application/*")
                    || t.is_empty()
            });
            if !acceptable {
                return Err(ApiError {
                    code: 406,
                    reason: "NotAcceptable",
                    message: format!("only application/json is supported, not {a}"),
                    details: None,
                });
            }
        }
        let body = if matches!(
            method,
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE
        ) {
            let limited = http_body_util::Limited::new(req.into_body(), MAX_BODY);
            match limited.collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    return Err(ApiError {
                        code: 413,
                        reason: "RequestEntityTooLarge",
                        message: format!("request body: {e}"),
                        details: None,
                    });
                }
            }
        } else {
            Bytes::new()
        };
        self.api
            .handle(ApiRequest {
                method,
                target,
                query,
                content_type,
                accept,
                body,
            })
            .await
    }
}

fn discovery_document(target: Target, server_address: &str) -> Option<Value> {
    match target {
        Target::Version => Some(discovery::version()),
        Target::CoreVersions => Some(discovery::core_versions(server_address)),
        Target::Groups => Some(discovery::groups()),
        Target::Group(g) => discovery::group(&g),
        Target::ResourceList { group, version } => discovery::resource_list(&group, &version),
        Target::OpenApiV3Root => Some(discovery::openapi_v3_root()),
        Target::OpenApiV3 { group, version } => discovery::openapi_v3(&group, &version),
        Target::OpenApiV2 | Target::Health | Target::Resource(_) => None,
    }
}
