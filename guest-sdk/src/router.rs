//! A small path router: enough for an app's handful of routes, small enough to
//! read in one sitting.

use crate::percent;
use crate::request::{Method, Request};
use crate::response::{IntoResponse, Response};

type Handler = Box<dyn Fn(&Request, &Params) -> Response>;

/// Routes requests by method and path pattern.
///
/// Patterns are matched segment by segment: a literal segment must be equal,
/// `:name` matches any one segment, and a final `*name` matches the rest of
/// the path (possibly empty). Routes are tried in the order they were added.
/// A path that matches no route gets `404`; a path that matches only with
/// another method gets `405` with an `Allow` header.
///
/// ```
/// use switchyard_sdk::{Method, Request, Response, Router};
///
/// let router = Router::new()
///     .get("/users/:id", |_, p| Response::text(format!("user {}", p.get("id").unwrap_or(""))))
///     .get("/files/*path", |_, p| Response::text(p.get("path").unwrap_or("").to_string()));
///
/// let res = router.handle(&Request::new(Method::Get, "/users/42"));
/// assert_eq!(res.body(), b"user 42");
/// let res = router.handle(&Request::new(Method::Get, "/files/a/b.txt"));
/// assert_eq!(res.body(), b"a/b.txt");
/// assert_eq!(router.handle(&Request::new(Method::Post, "/users/42")).status(), 405);
/// ```
#[derive(Default)]
pub struct Router {
    routes: Vec<Route>,
}

struct Route {
    /// `None` matches every method.
    method: Option<Method>,
    pattern: Vec<Segment>,
    handler: Handler,
}

enum Segment {
    Literal(String),
    Param(String),
    Rest(String),
}

/// Values captured by `:name` and `*name` segments, percent-decoded.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Params {
    values: Vec<(String, String)>,
}

impl Params {
    /// The value captured for `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

impl Router {
    /// An empty router.
    pub fn new() -> Self {
        Router::default()
    }

    /// Adds a route for `method` (or every method, with `None`).
    ///
    /// # Panics
    ///
    /// If `pattern` does not start with `/`, or has a `*rest` segment that is
    /// not the last one: both are mistakes in the app's own code.
    pub fn route<F, R>(mut self, method: Option<Method>, pattern: &str, handler: F) -> Self
    where
        F: Fn(&Request, &Params) -> R + 'static,
        R: IntoResponse,
    {
        assert!(
            pattern.starts_with('/'),
            "route pattern `{pattern}` must start with `/`"
        );
        let parts: Vec<&str> = pattern[1..].split('/').collect();
        let last = parts.len() - 1;
        let pattern = parts
            .iter()
            .enumerate()
            .map(|(i, part)| {
                if let Some(name) = part.strip_prefix(':') {
                    Segment::Param(name.to_string())
                } else if let Some(name) = part.strip_prefix('*') {
                    assert!(
                        i == last,
                        "`*{name}` must be the last segment of `{pattern}`"
                    );
                    Segment::Rest(name.to_string())
                } else {
                    Segment::Literal((*part).to_string())
                }
            })
            .collect();
        self.routes.push(Route {
            method,
            pattern,
            handler: Box::new(move |req, params| handler(req, params).into_response()),
        });
        self
    }

    /// Adds a `GET` route (which also answers `HEAD`).
    pub fn get<F, R>(self, pattern: &str, handler: F) -> Self
    where
        F: Fn(&Request, &Params) -> R + 'static,
        R: IntoResponse,
    {
        self.route(Some(Method::Get), pattern, handler)
    }

    /// Adds a `POST` route.
    pub fn post<F, R>(self, pattern: &str, handler: F) -> Self
    where
        F: Fn(&Request, &Params) -> R + 'static,
        R: IntoResponse,
    {
        self.route(Some(Method::Post), pattern, handler)
    }

    /// Adds a `PUT` route.
    pub fn put<F, R>(self, pattern: &str, handler: F) -> Self
    where
        F: Fn(&Request, &Params) -> R + 'static,
        R: IntoResponse,
    {
        self.route(Some(Method::Put), pattern, handler)
    }

    /// Adds a `PATCH` route.
    pub fn patch<F, R>(self, pattern: &str, handler: F) -> Self
    where
        F: Fn(&Request, &Params) -> R + 'static,
        R: IntoResponse,
    {
        self.route(Some(Method::Patch), pattern, handler)
    }

    /// Adds a `DELETE` route.
    pub fn delete<F, R>(self, pattern: &str, handler: F) -> Self
    where
        F: Fn(&Request, &Params) -> R + 'static,
        R: IntoResponse,
    {
        self.route(Some(Method::Delete), pattern, handler)
    }

    /// Adds a route that answers every method.
    pub fn any<F, R>(self, pattern: &str, handler: F) -> Self
    where
        F: Fn(&Request, &Params) -> R + 'static,
        R: IntoResponse,
    {
        self.route(None, pattern, handler)
    }

    /// Dispatches `req` to the first matching route.
    pub fn handle(&self, req: &Request) -> Response {
        let segments: Vec<&str> = req.path()[1..].split('/').collect();
        let mut allowed: Vec<&str> = Vec::new();
        for route in &self.routes {
            let Some(params) = match_pattern(&route.pattern, &segments) else {
                continue;
            };
            match &route.method {
                Some(method) if !method_matches(method, req.method()) => {
                    if !allowed.contains(&method.as_str()) {
                        allowed.push(method.as_str());
                    }
                }
                _ => return (route.handler)(req, &params),
            }
        }
        if allowed.is_empty() {
            Response::text("not found\n").with_status(404)
        } else {
            Response::text("method not allowed\n")
                .with_status(405)
                .with_header("allow", allowed.join(", "))
        }
    }
}

fn method_matches(route: &Method, request: &Method) -> bool {
    route == request || (*route == Method::Get && *request == Method::Head)
}

fn match_pattern(pattern: &[Segment], segments: &[&str]) -> Option<Params> {
    let mut params = Params::default();
    for (i, segment) in pattern.iter().enumerate() {
        match segment {
            Segment::Rest(name) => {
                let rest = segments.get(i..).map(|s| s.join("/")).unwrap_or_default();
                params
                    .values
                    .push((name.clone(), percent::decode(&rest, false)));
                return Some(params);
            }
            Segment::Literal(literal) => {
                if segments.get(i) != Some(&literal.as_str()) {
                    return None;
                }
            }
            Segment::Param(name) => {
                let value = segments.get(i).filter(|s| !s.is_empty())?;
                params
                    .values
                    .push((name.clone(), percent::decode(value, false)));
            }
        }
    }
    (segments.len() == pattern.len()).then_some(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(router: &Router, path: &str) -> Response {
        router.handle(&Request::new(Method::Get, path))
    }

    fn echo_params(names: &'static [&'static str]) -> impl Fn(&Request, &Params) -> String {
        move |_, p| {
            names
                .iter()
                .map(|n| format!("{n}={}", p.get(n).unwrap_or("-")))
                .collect::<Vec<_>>()
                .join(",")
        }
    }

    #[test]
    fn literal_param_and_rest_segments() {
        let router = Router::new()
            .get("/", |_, _| "root")
            .get("/users/:id", echo_params(&["id"]))
            .get("/users/:id/posts/:post", echo_params(&["id", "post"]))
            .get("/static/*path", echo_params(&["path"]));
        assert_eq!(get(&router, "/").body(), b"root");
        assert_eq!(get(&router, "/users/7").body(), b"id=7");
        assert_eq!(get(&router, "/users/7/posts/9").body(), b"id=7,post=9");
        assert_eq!(
            get(&router, "/static/css/site.css").body(),
            b"path=css/site.css"
        );
        assert_eq!(get(&router, "/static/").body(), b"path=");
        assert_eq!(
            get(&router, "/users/").status(),
            404,
            "empty param does not match"
        );
        assert_eq!(get(&router, "/users/7/extra").status(), 404);
        assert_eq!(get(&router, "/nope").status(), 404);
    }

    #[test]
    fn params_are_percent_decoded() {
        let router = Router::new().get("/q/:term", echo_params(&["term"]));
        assert_eq!(get(&router, "/q/hello%20world").body(), b"term=hello world");
    }

    #[test]
    fn method_mismatch_is_405_with_allow() {
        let router = Router::new()
            .post("/items", |_, _| "created")
            .put("/items", |_, _| "replaced");
        let res = get(&router, "/items");
        assert_eq!(res.status(), 405);
        assert_eq!(res.header("allow"), Some("POST, PUT"));
        let res = router.handle(&Request::new(Method::Put, "/items"));
        assert_eq!(res.body(), b"replaced");
    }

    #[test]
    fn get_routes_answer_head_and_any_answers_all() {
        let router = Router::new()
            .get("/g", |_, _| "g")
            .any("/a", |r: &Request, _: &Params| r.method().to_string());
        assert_eq!(
            router.handle(&Request::new(Method::Head, "/g")).status(),
            200
        );
        assert_eq!(
            router.handle(&Request::new(Method::Delete, "/a")).body(),
            b"DELETE"
        );
    }

    #[test]
    fn first_matching_route_wins() {
        let router = Router::new()
            .get("/x/special", |_, _| "special")
            .get("/x/:any", |_, _| "any");
        assert_eq!(get(&router, "/x/special").body(), b"special");
        assert_eq!(get(&router, "/x/other").body(), b"any");
    }

    #[test]
    #[should_panic(expected = "must be the last segment")]
    fn rest_must_be_last() {
        let _ = Router::new().get("/a/*rest/b", |_, _| "");
    }
}
