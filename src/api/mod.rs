//! The HTTP API: the only module that imports warp. Filters route and extract, handlers are
//! plain async functions that call `service` and turn results into replies; `error` alone
//! chooses status codes, `routes` holds the table of paths and methods.
//!
//! Every request carries a [`Peer`] extension (set by `server`): the verified certificate
//! identity of the connection, or none for anonymous TLS clients. Its `Authorization` header,
//! if any, goes with it to the service, which authenticates bearer tokens.

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
mod web;
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
pub use body::BodyLimits;
use error::{ApiError, respond};
use service::admission::BodyAccess;

/// The certificate identity of the connection a request came on.
#[derive(Clone, Default)]
pub struct Peer(pub Option<Arc<CertIdentity>>);

/// What handlers get: the service, who is calling, and the rules for reading bodies.
#[derive(Clone)]
pub struct Ctx {
    pub service: Arc<Service>,
    pub peer: Peer,
    /// The request's `Authorization` header (a bearer token, maybe). Never logged.
    authorization: Option<Arc<str>>,
    pub body: BodyLimits,
}

impl Ctx {
    pub fn peer(&self) -> Option<&CertIdentity> {
        self.peer.0.as_deref()
    }

    /// The bearer token of the request, if it has one.
    pub fn bearer(&self) -> Option<&str> {
        service::bearer_token(self.authorization.as_deref())
    }

    /// The FTS3 user of this request.
    pub async fn user(&self) -> Result<User, ApiError> {
        Ok(self
            .service
            .user(self.peer(), self.authorization.as_deref())
            .await?)
    }
}

/// All routes, with the fallback answering OPTIONS, 405 and 404.
pub fn routes(service: Arc<Service>, body: BodyLimits) -> BoxedFilter<(Response,)> {
    let ctx = warp::ext::optional::<Peer>()
        .and(warp::header::headers_cloned())
        .map(
            move |peer: Option<Peer>, headers: warp::http::HeaderMap| Ctx {
                service: service.clone(),
                peer: peer.unwrap_or_default(),
                // A header that is not text cannot hold a bearer token: as if absent.
                authorization: headers
                    .get(warp::http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .map(Arc::from),
                body: body.clone(),
            },
        );
    let root = warp::get()
        .and(warp::path::end())
        .and(ctx.clone())
        .map(root::root);
    let whoami = warp::get()
        .and(warp::path!("whoami"))
        .and(ctx.clone())
        .then(|ctx: Ctx| async move { respond(whoami::whoami(&ctx).await) });
    let certificate = warp::get()
        .and(warp::path!("whoami" / "certificate"))
        .and(ctx.clone())
        .map(|ctx: Ctx| respond(whoami::certificate(&ctx)));
    let delegation_view = warp::get()
        .and(warp::path!("delegation" / String))
        .and(warp::header::optional::<String>("user-agent"))
        .and(ctx.clone())
        .then(|id: String, ua: Option<String>, ctx: Ctx| async move {
            respond(delegation::view(&ctx, &id, ua.as_deref()).await)
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
        .then(|id: String, ctx: Ctx, len, body| async move {
            respond(delegation::credential(ctx, id, len, body).await)
        });
    let delegation_delete = warp::delete()
        .and(warp::path!("delegation" / String))
        .and(ctx.clone())
        .then(|id: String, ctx: Ctx| async move { respond(delegation::delete(&ctx, &id).await) });
    let delegation_voms = warp::post()
        .and(warp::path!("delegation" / String / "voms"))
        .and(ctx.clone())
        .then(|id: String, ctx: Ctx| async move { respond(delegation::voms(&ctx, &id).await) });
    let ftsmon = warp::get()
        .and(
            warp::path("ftsmon")
                .or(warp::path("fts3").and(warp::path("ftsmon")))
                .unify(),
        )
        .and(warp::path::tail())
        .and(ctx.clone())
        .and(warp::query::<Query>())
        .then(|tail: warp::path::Tail, ctx: Ctx, q: Query| async move {
            respond(ftsmon::get(&ctx, tail.as_str(), q).await)
        });
    let web = warp::get()
        .and(warp::path("web"))
        .and(warp::path::tail())
        .and(ctx.clone())
        .and(warp::query::<Query>())
        .and(warp::header::optional::<String>("hx-request"))
        .then(
            |tail: warp::path::Tail, ctx: Ctx, q: Query, hx: Option<String>| async move {
                web::get(&ctx, tail.as_str(), q, hx.as_deref() == Some("true")).await
            },
        );
    let metrics = warp::get()
        .and(warp::path!("metrics"))
        .and(ctx.clone())
        .then(|ctx: Ctx| async move { respond(ftsmon::metrics(&ctx).await) });
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
        .or(web)
        .unify()
        .or(fallback)
        .unify()
        .boxed()
}

type Query = std::collections::HashMap<String, String>;

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
    let ban_se = post("se").then(
        |ctx: Ctx, ct: Option<String>, q: Query, len, body| async move {
            let result =
                match body::read(&ctx, BodyAccess::Config, len, body, bans::MAX_BAN_BODY).await {
                    Ok(body) => bans::ban_se(&ctx, ct.as_deref(), q, &body).await,
                    Err(e) => Err(e),
                };
            respond(result)
        },
    );
    let ban_dn = post("dn").then(
        |ctx: Ctx, ct: Option<String>, q: Query, len, body| async move {
            let result =
                match body::read(&ctx, BodyAccess::Config, len, body, bans::MAX_BAN_BODY).await {
                    Ok(body) => bans::ban_dn(&ctx, ct.as_deref(), q, &body).await,
                    Err(e) => Err(e),
                };
            respond(result)
        },
    );
    let unban_se = warp::delete()
        .and(warp::path!("ban" / "se"))
        .and(ctx.clone())
        .and(query())
        .then(|ctx: Ctx, q: Query| async move { respond(bans::unban_se(&ctx, q).await) });
    let unban_dn = warp::delete()
        .and(warp::path!("ban" / "dn"))
        .and(ctx.clone())
        .and(query())
        .then(|ctx: Ctx, q: Query| async move { respond(bans::unban_dn(&ctx, q).await) });
    let list_se = warp::get()
        .and(warp::path!("ban" / "se"))
        .and(ctx.clone())
        .then(|ctx: Ctx| async move { respond(bans::list_se(&ctx).await) });
    let list_dn = warp::get()
        .and(warp::path!("ban" / "dn"))
        .and(ctx.clone())
        .then(|ctx: Ctx| async move { respond(bans::list_dn(&ctx).await) });
    let audit = warp::get()
        .and(warp::path!("config" / "audit"))
        .and(ctx)
        .then(|ctx: Ctx| async move { respond(bans::config_audit(&ctx).await) });
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

/// What an async handler returns, boxed so that handlers can sit in one table.
type Reply =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response, ApiError>> + Send>>;
/// A setter: parses nothing itself, gets the content type and the (bounded) body.
type Setter = fn(Ctx, Option<String>, body::Body) -> Reply;
/// A handler of the query string (listings with filters, deletions).
type QueryHandler = fn(Ctx, Query) -> Reply;
/// A handler of one path segment (`/config/links/<name>`, `/config/activity_shares/<vo>`).
type NameHandler = fn(Ctx, String) -> Reply;

/// A [`Setter`] of an `async fn(&Ctx, Option<&str>, &[u8])` handler.
macro_rules! setter {
    ($handler:path) => {
        |ctx: Ctx, ct: Option<String>, body: body::Body| -> Reply {
            Box::pin(async move { $handler(&ctx, ct.as_deref(), &body).await })
        }
    };
}

/// A [`QueryHandler`] of an `async fn(&Ctx, Query)` handler.
macro_rules! query_handler {
    ($handler:path) => {
        |ctx: Ctx, q: Query| -> Reply { Box::pin(async move { $handler(&ctx, q).await }) }
    };
    (ignore $handler:path) => {
        |ctx: Ctx, _: Query| -> Reply { Box::pin(async move { $handler(&ctx).await }) }
    };
}

/// A [`NameHandler`] of an `async fn(&Ctx, &str)` handler.
macro_rules! name_handler {
    ($handler:path) => {
        |ctx: Ctx, name: String| -> Reply { Box::pin(async move { $handler(&ctx, &name).await }) }
    };
}

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
        // The activity shares and the grants also require a certificate (as their use cases).
        let access = match name {
            "activity_shares" | "authorize" => BodyAccess::CertificateAndConfig,
            _ => BodyAccess::Config,
        };
        warp::post()
            .and(path(name))
            .and(ctx.clone())
            .and(warp::header::optional::<String>("content-type"))
            .and(body::stream())
            .then(move |ctx: Ctx, ct: Option<String>, len, body| async move {
                let result =
                    match body::read(&ctx, access, len, body, config::MAX_CONFIG_BODY).await {
                        Ok(body) => handler(ctx, ct, body).await,
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
            .then(move |ctx: Ctx, q: Query| async move { respond(handler(ctx, q).await) })
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
            .then(move |segment: String, ctx: Ctx| async move {
                respond(handler(ctx, segment).await)
            })
            .boxed()
    };
    let hosts = warp::get()
        .and(warp::path("config"))
        .and(warp::path::end())
        .and(ctx.clone())
        .then(|ctx: Ctx| async move { respond(config::hosts(&ctx).await) })
        .boxed();
    let routes: Vec<BoxedFilter<(Response,)>> = vec![
        post("drain", setter!(config::drain)),
        with_query(get(), "global", query_handler!(ignore config::global)),
        post("global", setter!(config::set_global)),
        with_query(delete(), "global", query_handler!(config::delete_global)),
        with_query(get(), "links", query_handler!(ignore config::links)),
        post("links", setter!(config::set_link)),
        named(get(), "links", name_handler!(config::link)),
        named(delete(), "links", name_handler!(config::delete_link)),
        with_query(get(), "shares", query_handler!(ignore config::shares)),
        post("shares", setter!(config::set_share)),
        with_query(delete(), "shares", query_handler!(config::delete_share)),
        with_query(get(), "se", query_handler!(config::se)),
        post("se", setter!(config::set_se)),
        with_query(delete(), "se", query_handler!(config::delete_se)),
        with_query(
            get(),
            "activity_shares",
            query_handler!(ignore config::activity_shares),
        ),
        post("activity_shares", setter!(config::set_activity_share)),
        named(
            get(),
            "activity_shares",
            name_handler!(config::activity_share),
        ),
        named(
            delete(),
            "activity_shares",
            name_handler!(config::delete_activity_share),
        ),
        with_query(get(), "authorize", query_handler!(config::grants)),
        post("authorize", setter!(config::grant)),
        with_query(delete(), "authorize", query_handler!(config::revoke)),
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
        .then(|ctx: Ctx| async move { respond(optimizer::enabled(&ctx).await) });
    let evolution = warp::get()
        .and(warp::path!("optimizer" / "evolution"))
        .and(ctx.clone())
        .and(query())
        .then(|ctx: Ctx, q: Query| async move { respond(optimizer::evolution(&ctx, q).await) });
    let current = warp::get()
        .and(warp::path!("optimizer" / "current"))
        .and(ctx.clone())
        .and(query())
        .then(|ctx: Ctx, q: Query| async move { respond(optimizer::current(&ctx, q).await) });
    let set_current = warp::post()
        .and(warp::path!("optimizer" / "current"))
        .and(ctx.clone())
        .and(warp::header::optional::<String>("content-type"))
        .and(body::stream())
        .then(|ctx: Ctx, ct: Option<String>, len, body| async move {
            let limit = optimizer::MAX_OPTIMIZER_BODY;
            let result = match body::read(&ctx, BodyAccess::Config, len, body, limit).await {
                Ok(body) => optimizer::set_current(&ctx, ct.as_deref(), &body).await,
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
        .then(|ctx: Ctx, q: Query| async move { respond(optimizer::snapshot(&ctx, q).await) });
    let hosts = warp::get()
        .and(warp::path!("status" / "hosts"))
        .and(ctx)
        .then(|ctx: Ctx| async move { respond(optimizer::hosts(&ctx).await) });
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
            |ctx: Ctx, method: Method, ct: Option<String>, len, body| async move {
                let limit = jobs::MAX_SUBMIT_BODY;
                let result = match body::read(&ctx, BodyAccess::Transfer, len, body, limit).await {
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
        .then(move |ctx: Ctx, mut q: Query| async move {
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
            respond(jobs::list(&ctx, query, fields).await)
        });
    let cancel_all = warp::delete()
        .and(warp::path!("jobs" / "all"))
        .and(ctx.clone())
        .then(|ctx: Ctx| async move { respond(jobs::cancel_all(&ctx, None).await) });
    let cancel_vo = warp::delete()
        .and(warp::path!("jobs" / "vo" / String))
        .and(ctx.clone())
        .then(
            |vo: String, ctx: Ctx| async move { respond(jobs::cancel_all(&ctx, Some(&vo)).await) },
        );
    let job_files = warp::get()
        .and(warp::path!("jobs" / String / "files"))
        .and(ctx.clone())
        .then(|id: String, ctx: Ctx| async move { respond(jobs::files(&ctx, &id).await) });
    let job_dm = warp::get()
        .and(warp::path!("jobs" / String / "dm"))
        .and(ctx.clone())
        .then(|id: String, ctx: Ctx| async move { respond(jobs::empty_sub_list(&ctx, &id).await) });
    let retries = warp::get()
        .and(warp::path!("jobs" / String / "files" / String / "retries"))
        .and(ctx.clone())
        .then(|id: String, file: String, ctx: Ctx| async move {
            respond(jobs::file_retries(&ctx, &id, &file).await)
        });
    let cancel_files = warp::delete()
        .and(warp::path!("jobs" / String / "files" / String))
        .and(ctx.clone())
        .then(|id: String, files: String, ctx: Ctx| async move {
            respond(jobs::cancel_files(&ctx, &id, &files).await)
        });
    let field = warp::get()
        .and(warp::path!("jobs" / String / String))
        .and(ctx.clone())
        .then(|id: String, field: String, ctx: Ctx| async move {
            respond(jobs::field(&ctx, &id, &field).await)
        });
    let get = warp::get()
        .and(warp::path!("jobs" / String))
        .and(ctx.clone())
        .and(query())
        .then(move |ids: String, ctx: Ctx, mut q: Query| async move {
            let files = take(&mut q, "files");
            respond(jobs::get(&ctx, &ids, files).await)
        });
    let cancel = warp::delete()
        .and(warp::path!("jobs" / String))
        .and(ctx.clone())
        .then(|ids: String, ctx: Ctx| async move { respond(jobs::cancel(&ctx, &ids).await) });
    let modify = warp::post()
        .and(warp::path!("jobs" / String))
        .and(ctx.clone())
        .and(content_type())
        .and(body::stream())
        .then(
            |ids: String, ctx: Ctx, ct: Option<String>, len, body| async move {
                let limit = jobs::MAX_SMALL_BODY;
                let result = match body::read(&ctx, BodyAccess::Transfer, len, body, limit).await {
                    Ok(body) => jobs::modify(&ctx, &ids, ct.as_deref(), &body).await,
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
        .then(move |ctx: Ctx, mut q: Query| async move {
            let query = service::jobs::FilesQuery {
                vo_name: take(&mut q, "vo_name"),
                state_in: take(&mut q, "state_in"),
                source_se: take(&mut q, "source_se"),
                dest_se: take(&mut q, "dest_se"),
                dest_surl: take(&mut q, "dest_surl"),
                time_window: take(&mut q, "time_window"),
                limit: take(&mut q, "limit"),
            };
            respond(jobs::list_files(&ctx, query).await)
        });
    let force_start = warp::post()
        .and(warp::path!("admin" / "force-start"))
        .and(ctx)
        .and(content_type())
        .and(body::stream())
        .then(|ctx: Ctx, ct: Option<String>, len, body| async move {
            let limit = jobs::MAX_SMALL_BODY;
            let access = BodyAccess::CertificateAndAdmin;
            let result = match body::read(&ctx, access, len, body, limit).await {
                Ok(body) => jobs::force_start(&ctx, ct.as_deref(), &body).await,
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
