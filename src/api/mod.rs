//! The HTTP API: the only module that imports warp. Filters route and extract, handlers are
//! plain async functions that call `service` and turn results into replies; `error` alone
//! chooses status codes, `routes` holds the table of paths and methods.
//!
//! Every request carries a [`Peer`] extension (set by `server`): the verified certificate
//! identity of the connection, or none for anonymous TLS clients.

mod bans;
mod body;
mod config;
mod delegation;
pub mod error;
mod ftsmon;
mod input;
pub mod jobs;
mod optimizer;
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

use crate::{
    auth::CertIdentity,
    model::identity::User,
    service::{self, Service},
};
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
    let ftsmon = warp::get()
        .and(
            warp::path("ftsmon")
                .or(warp::path("fts3").and(warp::path("ftsmon")))
                .unify(),
        )
        .and(warp::path::tail())
        .and(ctx.clone())
        .and(warp::query::<Query>())
        .map(|tail: warp::path::Tail, ctx: Ctx, q: Query| {
            respond(ftsmon::get(&ctx, tail.as_str(), q))
        });
    let metrics = warp::get()
        .and(warp::path!("metrics"))
        .and(ctx.clone())
        .map(|ctx: Ctx| respond(ftsmon::metrics(&ctx)));
    let jobs = job_routes(ctx.clone());
    let bans = ban_routes(ctx.clone());
    let config = config_routes(ctx.clone());
    let optimizer = optimizer_routes(ctx.clone());
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
        .or(jobs)
        .unify()
        .or(bans)
        .unify()
        .or(config)
        .unify()
        .or(optimizer)
        .unify()
        .or(ftsmon)
        .unify()
        .or(metrics)
        .unify()
        .or(fallback)
        .unify()
        .boxed()
}

type Query = std::collections::HashMap<String, String>;

/// Bounded body read for handlers that take one.
async fn read_body<S, B>(body: S, limit: usize) -> Result<Vec<u8>, ApiError>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>>,
    B: bytes::Buf,
{
    body::read(body, limit).await
}

/// `/ban/se`, `/ban/dn`, `/config/audit`.
fn ban_routes(
    ctx: impl Filter<Extract = (Ctx,), Error = Infallible> + Clone + Send + Sync + 'static,
) -> BoxedFilter<(Response,)> {
    let content_type = || warp::header::optional::<String>("content-type");
    let query = || warp::query::<Query>();
    let post = |path: &'static str| {
        warp::post()
            .and(warp::path("ban"))
            .and(warp::path(path))
            .and(warp::path::end())
            .and(ctx.clone())
            .and(content_type())
            .and(query())
            .and(body::stream())
    };
    let ban_se = post("se").then(|ctx: Ctx, ct: Option<String>, q: Query, body| async move {
        let result = match read_body(body, bans::MAX_BAN_BODY).await {
            Ok(body) => bans::ban_se(&ctx, ct.as_deref(), q, &body),
            Err(e) => Err(e),
        };
        respond(result)
    });
    let ban_dn = post("dn").then(|ctx: Ctx, ct: Option<String>, q: Query, body| async move {
        let result = match read_body(body, bans::MAX_BAN_BODY).await {
            Ok(body) => bans::ban_dn(&ctx, ct.as_deref(), q, &body),
            Err(e) => Err(e),
        };
        respond(result)
    });
    let unban_se = warp::delete()
        .and(warp::path!("ban" / "se"))
        .and(ctx.clone())
        .and(query())
        .map(|ctx: Ctx, q: Query| respond(bans::unban_se(&ctx, q)));
    let unban_dn = warp::delete()
        .and(warp::path!("ban" / "dn"))
        .and(ctx.clone())
        .and(query())
        .map(|ctx: Ctx, q: Query| respond(bans::unban_dn(&ctx, q)));
    let list_se = warp::get()
        .and(warp::path!("ban" / "se"))
        .and(ctx.clone())
        .map(|ctx: Ctx| respond(bans::list_se(&ctx)));
    let list_dn = warp::get()
        .and(warp::path!("ban" / "dn"))
        .and(ctx.clone())
        .map(|ctx: Ctx| respond(bans::list_dn(&ctx)));
    let audit = warp::get()
        .and(warp::path!("config" / "audit"))
        .and(ctx)
        .map(|ctx: Ctx| respond(bans::config_audit(&ctx)));
    ban_se
        .or(ban_dn)
        .unify()
        .or(unban_se)
        .unify()
        .or(unban_dn)
        .unify()
        .or(list_se)
        .unify()
        .or(list_dn)
        .unify()
        .or(audit)
        .unify()
        .boxed()
}

/// A setter: parses nothing itself, gets the content type and the (bounded) body.
type Setter = fn(&Ctx, Option<&str>, &[u8]) -> Result<Response, ApiError>;
/// A handler of the query string (listings with filters, deletions).
type QueryHandler = fn(&Ctx, Query) -> Result<Response, ApiError>;
/// A handler of one path segment (`/config/links/<name>`, `/config/activity_shares/<vo>`).
type NameHandler = fn(&Ctx, &str) -> Result<Response, ApiError>;

/// `/config`, `/config/drain|global|links|shares|se|activity_shares|authorize`.
fn config_routes(
    ctx: impl Filter<Extract = (Ctx,), Error = Infallible> + Clone + Send + Sync + 'static,
) -> BoxedFilter<(Response,)> {
    let path = |name: &'static str| {
        warp::path("config")
            .and(warp::path(name))
            .and(warp::path::end())
    };
    let post = |name: &'static str, handler: Setter| {
        warp::post()
            .and(path(name))
            .and(ctx.clone())
            .and(warp::header::optional::<String>("content-type"))
            .and(body::stream())
            .then(move |ctx: Ctx, ct: Option<String>, body| async move {
                let result = match read_body(body, config::MAX_CONFIG_BODY).await {
                    Ok(body) => handler(&ctx, ct.as_deref(), &body),
                    Err(e) => Err(e),
                };
                respond(result)
            })
            .boxed()
    };
    let with_query = |method: BoxedFilter<()>, name: &'static str, handler: QueryHandler| {
        method
            .and(path(name))
            .and(ctx.clone())
            .and(warp::query::<Query>())
            .map(move |ctx: Ctx, q: Query| respond(handler(&ctx, q)))
            .boxed()
    };
    let get = || warp::get().boxed();
    let delete = || warp::delete().boxed();
    let named = |method: BoxedFilter<()>, name: &'static str, handler: NameHandler| {
        method
            .and(warp::path("config"))
            .and(warp::path(name))
            .and(warp::path::param::<String>())
            .and(warp::path::end())
            .and(ctx.clone())
            .map(move |segment: String, ctx: Ctx| respond(handler(&ctx, &segment)))
            .boxed()
    };
    let hosts = warp::get()
        .and(warp::path("config"))
        .and(warp::path::end())
        .and(ctx.clone())
        .map(|ctx: Ctx| respond(config::hosts(&ctx)))
        .boxed();
    let routes: Vec<BoxedFilter<(Response,)>> = vec![
        post("drain", config::drain),
        with_query(get(), "global", |ctx, _| config::global(ctx)),
        post("global", config::set_global),
        with_query(delete(), "global", config::delete_global),
        with_query(get(), "links", |ctx, _| config::links(ctx)),
        post("links", config::set_link),
        named(get(), "links", config::link),
        named(delete(), "links", config::delete_link),
        with_query(get(), "shares", |ctx, _| config::shares(ctx)),
        post("shares", config::set_share),
        with_query(delete(), "shares", config::delete_share),
        with_query(get(), "se", config::se),
        post("se", config::set_se),
        with_query(delete(), "se", config::delete_se),
        with_query(get(), "activity_shares", |ctx, _| {
            config::activity_shares(ctx)
        }),
        post("activity_shares", config::set_activity_share),
        named(get(), "activity_shares", config::activity_share),
        named(delete(), "activity_shares", config::delete_activity_share),
        with_query(get(), "authorize", config::grants),
        post("authorize", config::grant),
        with_query(delete(), "authorize", config::revoke),
    ];
    routes
        .into_iter()
        .fold(hosts, |all, route| all.or(route).unify().boxed())
}

/// `/optimizer...`, `/snapshot`, `/status/hosts`.
fn optimizer_routes(
    ctx: impl Filter<Extract = (Ctx,), Error = Infallible> + Clone + Send + Sync + 'static,
) -> BoxedFilter<(Response,)> {
    let query = || warp::query::<Query>();
    let enabled = warp::get()
        .and(warp::path!("optimizer"))
        .and(ctx.clone())
        .map(|ctx: Ctx| respond(optimizer::enabled(&ctx)));
    let evolution = warp::get()
        .and(warp::path!("optimizer" / "evolution"))
        .and(ctx.clone())
        .and(query())
        .map(|ctx: Ctx, q: Query| respond(optimizer::evolution(&ctx, q)));
    let current = warp::get()
        .and(warp::path!("optimizer" / "current"))
        .and(ctx.clone())
        .and(query())
        .map(|ctx: Ctx, q: Query| respond(optimizer::current(&ctx, q)));
    let set_current = warp::post()
        .and(warp::path!("optimizer" / "current"))
        .and(ctx.clone())
        .and(warp::header::optional::<String>("content-type"))
        .and(body::stream())
        .then(|ctx: Ctx, ct: Option<String>, body| async move {
            let result = match read_body(body, optimizer::MAX_OPTIMIZER_BODY).await {
                Ok(body) => optimizer::set_current(&ctx, ct.as_deref(), &body),
                Err(e) => Err(e),
            };
            respond(result)
        });
    let snapshot = warp::get()
        .and(
            warp::path!("snapshot")
                .or(warp::path!("optimizer" / "snapshot"))
                .unify(),
        )
        .and(ctx.clone())
        .and(query())
        .map(|ctx: Ctx, q: Query| respond(optimizer::snapshot(&ctx, q)));
    let hosts = warp::get()
        .and(warp::path!("status" / "hosts"))
        .and(ctx)
        .map(|ctx: Ctx| respond(optimizer::hosts(&ctx)));
    enabled
        .or(evolution)
        .unify()
        .or(current)
        .unify()
        .or(set_current)
        .unify()
        .or(snapshot)
        .unify()
        .or(hosts)
        .unify()
        .boxed()
}

/// `/jobs...`, `/files`, `/admin/force-start`, `/api-docs/`, `/api-docs/schema/submit`.
fn job_routes(
    ctx: impl Filter<Extract = (Ctx,), Error = Infallible> + Clone + Send + Sync + 'static,
) -> BoxedFilter<(Response,)> {
    let content_type = || warp::header::optional::<String>("content-type");
    let query = || warp::query::<Query>();
    let take = |q: &mut Query, k: &str| q.remove(k);
    let schema = warp::get()
        .and(warp::path!("api-docs" / "schema" / "submit"))
        .map(jobs::schema)
        .or(warp::get().and(warp::path!("api-docs")).map(root::api_docs))
        .unify();
    let submit = warp::post()
        .or(warp::put())
        .unify()
        .and(warp::path("jobs"))
        .and(warp::path::end())
        .and(ctx.clone())
        .and(warp::method())
        .and(content_type())
        .and(body::stream())
        .then(
            |ctx: Ctx, method: Method, ct: Option<String>, body| async move {
                let result = match read_body(body, jobs::MAX_SUBMIT_BODY).await {
                    Ok(body) => jobs::submit(ctx, method, ct, body).await,
                    Err(e) => Err(e),
                };
                respond(result)
            },
        );
    let list = warp::get()
        .and(warp::path("jobs"))
        .and(warp::path::end())
        .and(ctx.clone())
        .and(query())
        .map(move |ctx: Ctx, mut q: Query| {
            let fields = take(&mut q, "fields");
            let query = service::jobs::ListQuery {
                user_dn: take(&mut q, "user_dn"),
                vo_name: take(&mut q, "vo_name"),
                dlg_id: take(&mut q, "dlg_id"),
                state_in: take(&mut q, "state_in"),
                source_se: take(&mut q, "source_se"),
                dest_se: take(&mut q, "dest_se"),
                limit: take(&mut q, "limit"),
                time_window: take(&mut q, "time_window"),
            };
            respond(jobs::list(&ctx, query, fields))
        });
    let cancel_all = warp::delete()
        .and(warp::path!("jobs" / "all"))
        .and(ctx.clone())
        .map(|ctx: Ctx| respond(jobs::cancel_all(&ctx, None)));
    let cancel_vo = warp::delete()
        .and(warp::path!("jobs" / "vo" / String))
        .and(ctx.clone())
        .map(|vo: String, ctx: Ctx| respond(jobs::cancel_all(&ctx, Some(&vo))));
    let job_files = warp::get()
        .and(warp::path!("jobs" / String / "files"))
        .and(ctx.clone())
        .map(|id: String, ctx: Ctx| respond(jobs::files(&ctx, &id)));
    let job_dm = warp::get()
        .and(warp::path!("jobs" / String / "dm"))
        .and(ctx.clone())
        .map(|id: String, ctx: Ctx| respond(jobs::empty_sub_list(&ctx, &id)));
    let retries = warp::get()
        .and(warp::path!("jobs" / String / "files" / String / "retries"))
        .and(ctx.clone())
        .map(|id: String, file: String, ctx: Ctx| respond(jobs::file_retries(&ctx, &id, &file)));
    let cancel_files = warp::delete()
        .and(warp::path!("jobs" / String / "files" / String))
        .and(ctx.clone())
        .map(|id: String, files: String, ctx: Ctx| respond(jobs::cancel_files(&ctx, &id, &files)));
    let field = warp::get()
        .and(warp::path!("jobs" / String / String))
        .and(ctx.clone())
        .map(|id: String, field: String, ctx: Ctx| respond(jobs::field(&ctx, &id, &field)));
    let get = warp::get()
        .and(warp::path!("jobs" / String))
        .and(ctx.clone())
        .and(query())
        .map(move |ids: String, ctx: Ctx, mut q: Query| {
            let files = take(&mut q, "files");
            respond(jobs::get(&ctx, &ids, files))
        });
    let cancel = warp::delete()
        .and(warp::path!("jobs" / String))
        .and(ctx.clone())
        .map(|ids: String, ctx: Ctx| respond(jobs::cancel(&ctx, &ids)));
    let modify = warp::post()
        .and(warp::path!("jobs" / String))
        .and(ctx.clone())
        .and(content_type())
        .and(body::stream())
        .then(
            |ids: String, ctx: Ctx, ct: Option<String>, body| async move {
                let result = match read_body(body, jobs::MAX_SMALL_BODY).await {
                    Ok(body) => jobs::modify(&ctx, &ids, ct.as_deref(), &body),
                    Err(e) => Err(e),
                };
                respond(result)
            },
        );
    let files = warp::get()
        .and(warp::path("files"))
        .and(warp::path::end())
        .and(ctx.clone())
        .and(query())
        .map(move |ctx: Ctx, mut q: Query| {
            let query = service::jobs::FilesQuery {
                vo_name: take(&mut q, "vo_name"),
                state_in: take(&mut q, "state_in"),
                source_se: take(&mut q, "source_se"),
                dest_se: take(&mut q, "dest_se"),
                dest_surl: take(&mut q, "dest_surl"),
                time_window: take(&mut q, "time_window"),
                limit: take(&mut q, "limit"),
            };
            respond(jobs::list_files(&ctx, query))
        });
    let force_start = warp::post()
        .and(warp::path!("admin" / "force-start"))
        .and(ctx)
        .and(content_type())
        .and(body::stream())
        .then(|ctx: Ctx, ct: Option<String>, body| async move {
            let result = match read_body(body, jobs::MAX_SMALL_BODY).await {
                Ok(body) => jobs::force_start(&ctx, ct.as_deref(), &body),
                Err(e) => Err(e),
            };
            respond(result)
        });
    schema
        .or(submit)
        .unify()
        .or(list)
        .unify()
        .or(cancel_all)
        .unify()
        .or(cancel_vo)
        .unify()
        .or(retries)
        .unify()
        .or(job_files)
        .unify()
        .or(job_dm)
        .unify()
        .or(cancel_files)
        .unify()
        .or(field)
        .unify()
        .or(get)
        .unify()
        .or(cancel)
        .unify()
        .or(modify)
        .unify()
        .or(files)
        .unify()
        .or(force_start)
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
