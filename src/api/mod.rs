//! The HTTP API: the only module that imports warp. Filters route and extract, handlers are
//! plain async functions that call `service` and turn results into replies; `error` alone
//! chooses status codes, `routes` holds the table of paths and methods.
//!
//! Every request carries a [`Peer`] extension (set by `server`): the verified certificate
//! identity of the connection, or none for anonymous TLS clients.

mod body;
mod delegation;
pub mod error;
mod root;
pub mod routes;
mod whoami;

use std::{convert::Infallible, sync::Arc};

use warp::{
    Filter,
    filters::BoxedFilter,
    http::{Method, Request, Uri},
    reply::Response,
};

use crate::{auth::CertIdentity, model::identity::User, service::Service};
use error::{ApiError, respond};

/// The certificate identity of the connection a request came on.
#[derive(Clone, Default)]
pub struct Peer(pub Option<Arc<CertIdentity>>);

/// What handlers get: the service and who is calling.
#[derive(Clone)]
pub struct Ctx {
    pub service: Arc<Service>,
    pub peer: Peer,
}

impl Ctx {
    pub fn peer(&self) -> Option<&CertIdentity> {
        self.peer.0.as_deref()
    }

    /// The FTS3 user of this request.
    pub fn user(&self) -> Result<User, ApiError> {
        Ok(self.service.user(self.peer())?)
    }
}

/// All routes, with the fallback answering OPTIONS, 405 and 404.
pub fn routes(service: Arc<Service>) -> BoxedFilter<(Response,)> {
    let ctx = warp::ext::optional::<Peer>().map(move |peer: Option<Peer>| Ctx {
        service: service.clone(),
        peer: peer.unwrap_or_default(),
    });
    let root = warp::get()
        .and(warp::path::end())
        .and(ctx.clone())
        .map(root::root);
    let whoami = warp::get()
        .and(warp::path!("whoami"))
        .and(ctx.clone())
        .map(|ctx: Ctx| respond(whoami::whoami(&ctx)));
    let certificate = warp::get()
        .and(warp::path!("whoami" / "certificate"))
        .and(ctx.clone())
        .map(|ctx: Ctx| respond(whoami::certificate(&ctx)));
    let delegation_view = warp::get()
        .and(warp::path!("delegation" / String))
        .and(warp::header::optional::<String>("user-agent"))
        .and(ctx.clone())
        .map(|id: String, ua: Option<String>, ctx: Ctx| {
            respond(delegation::view(&ctx, &id, ua.as_deref()))
        });
    let delegation_request = warp::get()
        .and(warp::path!("delegation" / String / "request"))
        .and(ctx.clone())
        .then(|id: String, ctx: Ctx| async move { respond(delegation::request(ctx, id).await) });
    let delegation_credential = warp::put()
        .or(warp::post())
        .unify()
        .and(warp::path!("delegation" / String / "credential"))
        .and(ctx.clone())
        .and(body::stream())
        .then(|id: String, ctx: Ctx, body| async move {
            respond(delegation::credential(ctx, id, body).await)
        });
    let delegation_delete = warp::delete()
        .and(warp::path!("delegation" / String))
        .and(ctx.clone())
        .map(|id: String, ctx: Ctx| respond(delegation::delete(&ctx, &id)));
    let delegation_voms = warp::post()
        .and(warp::path!("delegation" / String / "voms"))
        .and(ctx.clone())
        .map(|id: String, ctx: Ctx| respond(delegation::voms(&ctx, &id)));
    let fallback = warp::method()
        .and(warp::path::full())
        .map(|method: Method, path: warp::path::FullPath| routes::fallback(&method, path.as_str()));
    root.or(whoami)
        .unify()
        .or(certificate)
        .unify()
        .or(delegation_view)
        .unify()
        .or(delegation_request)
        .unify()
        .or(delegation_credential)
        .unify()
        .or(delegation_delete)
        .unify()
        .or(delegation_voms)
        .unify()
        .or(fallback)
        .unify()
        .boxed()
}

/// Bring a request into the shape the routes expect:
/// - the Python client sends `//whoami` (it joins `endpoint + "/" + "/path"`): leading slashes
///   collapse to one;
/// - `HEAD` is served as `GET` (hyper drops the body of the answer).
pub fn normalize<B>(req: &mut Request<B>) {
    if req.method() == Method::HEAD {
        *req.method_mut() = Method::GET;
    }
    let path = req.uri().path();
    if path.starts_with("//") {
        let trimmed = format!("/{}", path.trim_start_matches('/'));
        let rebuilt = match req.uri().query() {
            Some(q) => format!("{trimmed}?{q}"),
            None => trimmed,
        };
        if let Ok(uri) = rebuilt.parse::<Uri>() {
            *req.uri_mut() = uri;
        }
    }
}

/// Errors never escape as rejections: every path ends in a response.
pub type Never = Infallible;
