//! The admin endpoint for load balancers and Prometheus: `/healthz` (the
//! process answers and is not shutting down), `/readyz` (database and bus answer, not shutting down),
//! `/metrics` (Prometheus text). Plain HTTP/1 on its own address.

use std::convert::Infallible;
use std::future::Future;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::node::Node;

async fn route(node: Node, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, content_type, body) = match req.uri().path() {
        // A load balancer checks this: once shutdown starts the node takes no new connections, so it says so
        // before its listener closes and HAProxy stops sending clients it would refuse.
        "/healthz" if node.shutting_down() => {
            (StatusCode::SERVICE_UNAVAILABLE, "text/plain", "shutting down\n".to_owned())
        }
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        "/readyz" => {
            if node.ready().await {
                (StatusCode::OK, "text/plain", "ready\n".to_owned())
            } else {
                (StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not ready\n".to_owned())
            }
        }
        "/metrics" => (StatusCode::OK, "text/plain; version=0.0.4", node.metrics_text()),
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found\n".to_owned()),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    Ok(resp)
}

/// Serves the admin endpoint of `node` until `shutdown` resolves.
pub async fn run_admin(listener: TcpListener, node: Node, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let node = node.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| route(node.clone(), req));
                    if let Err(e) = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await {
                        tracing::debug!(error = %e, "admin connection ended");
                    }
                });
            }
        }
    }
}
